"""The layered :class:`~kgglm.config.Config` resolved once into frozen, typed sections.

:func:`resolve` is the one place that reads the flat config keys: it builds every layer's settings
object (the dataclasses each layer defines and validates) and returns them as a :class:`RunSettings`.
The surface, ``tasks/`` and ``serve/`` call it; each layer below receives only its section, never
the mapping (an import-linter contract keeps ``kgglm.config`` and this module above them)::

    config      -> RunSettings.run         RunOptions (seed, device, stage, checkpoint folder ...)
                   RunSettings.data        kgglm.data.loader.DataConfig
                   RunSettings.sampling    kgglm.paths.corpus.PathSampleConfig
                   RunSettings.model       kgglm.model.gpt.ModelConfig (vocab_size, n_positions: per build)
                   RunSettings.train       {'pretrain'|'finetune': kgglm.train.state.TrainConfig}
                   RunSettings.generation  kgglm.decode.generation.PathGenerationConfig
                   RunSettings.eval        kgglm.evaluate.evaluator.EvalConfig
                   RunSettings.expert      ExpertSettings (kgglm.train.expert.ExpertFitConfig + weight grid)
                   RunSettings.baseline    kgglm.baselines.base.BaselineSettings
                   RunSettings.kg          KGSettings (task kg_completion)
                   RunSettings.output      OutputSettings (export, examples, relation phrases)

Every default is in ``configs/overall.yaml`` (and the model/dataset/preset layers); a value a
section rejects is a :class:`~kgglm.config.ConfigError` naming the section and the key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

import numpy as np

from kgglm.baselines.base import BaselineSettings
from kgglm.config import Config, ConfigError
from kgglm.data.loader import DataConfig
from kgglm.decode.generation import PathGenerationConfig
from kgglm.distributed import resolve_device
from kgglm.evaluate.evaluator import EvalConfig
from kgglm.model.gpt import ModelConfig
from kgglm.paths.corpus import PathSampleConfig
from kgglm.train.expert import ExpertFitConfig
from kgglm.train.state import TRAIN_STAGES, TrainConfig

T = TypeVar("T")
KG_FIELD_KEYS = ("HEAD_ENTITY_ID_FIELD", "RELATION_ID_FIELD", "TAIL_ENTITY_ID_FIELD")


@dataclass(frozen=True)
class RunOptions:
    """What the task recipes themselves decide with: the run's identity, seed, device and stages."""

    task: str
    model: str
    dataset: str
    preset: str | None
    seed: int
    reproducibility: bool
    state: str  # the log level
    device: str  # resolved: ``device``, else cuda when ``use_gpu`` and available, else cpu
    checkpoint_dir: str
    show_progress: bool
    train_stage: str
    pre_model_path: str
    pretrain_epochs: int
    resume: bool
    baselines: tuple[str, ...]


@dataclass(frozen=True)
class OutputSettings:
    """What a recommendation run writes and prints besides its metrics."""

    export_recommendations: bool
    export_topk: int | None
    show_examples: int
    relation_phrases: Mapping[str, str]


@dataclass(frozen=True)
class ExpertSettings:
    """The history expert's schedule and the ``history_weight`` values tried on valid."""

    fit: ExpertFitConfig
    weight_grid: tuple[float, ...]


@dataclass(frozen=True)
class KGSettings:
    """Knowledge completion (task ``kg_completion``): the KG split and the fine-tuning loss."""

    kg_eval_args: Mapping[str, Any]
    finetune_loss: str
    fields: tuple[str, str, str]  # head, relation and tail columns of NAME.kg


@dataclass(frozen=True)
class RunSettings:
    """One run's settings, resolved once from its :class:`~kgglm.config.Config` (see the module
    docstring for the sections). ``config`` is the source, kept for what is written verbatim (the
    run's ``config.yaml`` and the checkpoints' saved config); it is read by ``tasks/`` alone."""

    run: RunOptions
    data: DataConfig
    sampling: PathSampleConfig
    model: ModelConfig | None  # None when the run's model is a baseline (no KGGLM architecture)
    train: Mapping[str, TrainConfig]
    generation: PathGenerationConfig
    eval: EvalConfig
    expert: ExpertSettings
    baseline: BaselineSettings
    kg: KGSettings
    output: OutputSettings
    config: Config = field(repr=False, compare=False)


# ---------------------------------------------------------------------------------- resolution
def resolve(config: Config | Mapping[str, Any]) -> RunSettings:
    """``config``'s sections; a plain mapping is first taken as the top layer of a KGGLM
    :class:`~kgglm.config.Config` (its ``model``/``dataset`` entries, if any, name them)."""
    if not isinstance(config, Config):
        values = dict(config)
        model, dataset = values.pop("model", "KGGLM"), values.pop("dataset", "ml-100k")
        values.pop("preset", None)
        config = Config(model, dataset, config_dict=values)
    c = config
    return RunSettings(
        run=_section("run", lambda: run_options(c)), data=_section("data", lambda: data_config(c)),
        sampling=_section("sampling", lambda: sample_config(c)),
        model=_section("model", lambda: model_config(c)) if c.model == "KGGLM" else None,
        train=_section("train", lambda: train_configs(c)), generation=_section("generation", lambda: generation(c)),
        eval=_section("eval", lambda: eval_config(c)), expert=_section("expert", lambda: expert_settings(c)),
        baseline=_section("baseline", lambda: baseline_settings(c)), kg=_section("kg", lambda: kg_settings(c)),
        output=_section("output", lambda: output_settings(c)), config=c)


def as_settings(settings: RunSettings | Config | Mapping[str, Any]) -> RunSettings:
    """``settings`` itself when already resolved, else :func:`resolve` of it (for the task functions
    that code and tests call with a config; a run resolves once and passes the settings)."""
    return settings if isinstance(settings, RunSettings) else resolve(settings)


def _section(name: str, build: Callable[[], T]) -> T:
    """``build()``, its ValueError (a section's validation, naming the key) as a ConfigError."""
    try:
        return build()
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{name} settings: {exc}") from None


def run_options(c: Config) -> RunOptions:
    return RunOptions(task=str(c["task"]), model=c.model, dataset=c.dataset, preset=c["preset"], seed=int(c["seed"]),
                      reproducibility=bool(c["reproducibility"]), state=str(c["state"]), device=device(c),
                      checkpoint_dir=str(c["checkpoint_dir"]), show_progress=bool(c["show_progress"]),
                      train_stage=str(c["train_stage"]), pre_model_path=str(c["pre_model_path"]),
                      pretrain_epochs=int(c["pretrain_epochs"]), resume=bool(c["resume"]),
                      baselines=tuple(str(b) for b in c["baselines"]))


def device(c: Config) -> str:
    """The torch device of the run: ``device`` if set, else cuda when ``use_gpu`` and available."""
    return str(resolve_device(c["device"], use_gpu=bool(c["use_gpu"])))


def data_config(c: Config) -> DataConfig:
    fields = ("USER_ID_FIELD", "ITEM_ID_FIELD", "TIME_FIELD", *KG_FIELD_KEYS, "ENTITY_ID_FIELD")
    bench = c["benchmark_filename"]
    return DataConfig(data_path=c["data_path"], eval_args=dict(c["eval_args"]), seed=int(c["seed"]),
                      benchmark_filename=None if bench is None else tuple(str(b) for b in bench),
                      ui_relation=str(c["ui_relation"]), show_progress=bool(c["show_progress"]),
                      item_name=str(c["item_name"]), **{k: str(c[k]) for k in fields})


def sample_config(c: Config) -> PathSampleConfig:
    psa = dict(c["path_sample_args"])
    hop = psa["pretrain_hop_length"]
    if isinstance(hop, str):  # "(3,3)" or "3,5" as written in YAML or on a command line
        hop = [int(x) for x in hop.strip("()[] ").split(",")]
    hop = [int(hop)] * 2 if np.isscalar(hop) else [int(x) for x in hop]
    cap = psa["pretrain_max_paths"]
    return PathSampleConfig(seed=int(c["seed"]), path_hop_length=int(c["path_hop_length"]),
                            MAX_PATHS_PER_USER=int(c["MAX_PATHS_PER_USER"]), pretrain_paths=int(psa["pretrain_paths"]),
                            pretrain_hop_length=(hop[0], hop[-1]), pretrain_max_paths=None if cap is None else int(cap),
                            pretrain_include_users=bool(psa["pretrain_include_users"]),
                            collaborative_path=bool(psa["collaborative_path"]),
                            ui_share=None if psa["ui_share"] is None else float(psa["ui_share"]),
                            last_hop=str(psa["last_hop"]))


def model_config(c: Config) -> ModelConfig:
    """The architecture; ``vocab_size`` and ``n_positions`` are 1 here, set per dataset and per build
    (:class:`kgglm.tasks.models.ModelBuilder`)."""
    expert = c["history_expert_args"]
    return ModelConfig(vocab_size=1, n_positions=1, embedding_size=int(c["embedding_size"]),
                       num_heads=int(c["num_heads"]), num_layers=int(c["num_layers"]), dropout=float(c["dropout"]),
                       use_kg_token_types=bool(c["use_kg_token_types"]), user_history=bool(c["user_history"]),
                       history_dropout=float(c["history_dropout"]), history_loss_weight=float(c["history_loss_weight"]),
                       history_expert_dim=int(expert["dim"] or 0), history_expert_dropout=float(expert["dropout"]),
                       history_expert_kg=bool(expert["kg_features"]))


def train_configs(c: Config) -> Mapping[str, TrainConfig]:
    """``{'finetune': ..., 'pretrain': ...}``; no ``pretrain`` entry when ``pretrain_epochs`` is 0 (no
    pre-training at all). The two differ in ``epochs`` and ``stage`` only."""
    finetune = TrainConfig(
        learning_rate=float(c["learning_rate"]), weight_decay=float(c["weight_decay"]),
        warmup_steps=int(c["warmup_steps"]), clip_grad_norm=float(c["clip_grad_norm"]),
        train_batch_size=int(c["train_batch_size"]), eval_batch_size=int(c["eval_batch_size"]),
        epochs=int(c["epochs"]), save_step=int(c["save_step"]), eval_step=int(c["eval_step"]),
        stopping_step=int(c["stopping_step"]), seed=int(c["seed"]), typed_output=bool(c["typed_output"]),
        show_progress=bool(c["show_progress"]), resume=bool(c["resume"]), stage="finetune",
        micro_batch_size=int(c["micro_batch_size"]), compile=bool(c["compile"]), device=device(c))
    stages = {"finetune": finetune}
    if int(c["pretrain_epochs"]) != 0:
        stages["pretrain"] = dataclasses.replace(finetune, epochs=int(c["pretrain_epochs"]), stage="pretrain")
    return MappingProxyType({s: stages[s] for s in TRAIN_STAGES if s in stages})


def generation(c: Config) -> PathGenerationConfig:
    args = dict(c["path_generation_args"])
    args["path_hop_length"] = int(c["path_hop_length"])
    args["avoid_relations"] = tuple(str(r) for r in args.get("avoid_relations") or ())
    return PathGenerationConfig(**args)


def eval_config(c: Config) -> EvalConfig:
    return EvalConfig(topk=tuple(sorted({int(k) for k in c["topk"]})), metrics=tuple(c["metrics"]),
                      valid_metric=str(c["valid_metric"]), eval_batch_size=int(c["eval_batch_size"]),
                      paper_ndcg=bool(c["paper_ndcg"]))


def expert_settings(c: Config) -> ExpertSettings:
    args = c["history_expert_args"]
    fit = ExpertFitConfig(epochs=int(args["epochs"]), learning_rate=float(args["learning_rate"]),
                          weight_decay=float(args["weight_decay"]), batch_size=int(args["batch_size"]),
                          eval_step=int(args["eval_step"]), stopping_step=int(args["stopping_step"]),
                          seed=int(c["seed"]))
    return ExpertSettings(fit=fit, weight_grid=tuple(float(w) for w in args["weight_grid"] or ()))


def baseline_settings(c: Config) -> BaselineSettings:
    """The run model's keys as a baseline reads them; :meth:`BaselineSettings.valid` (the grid choice
    without an ``evaluate_fn``) measures ``valid_metric`` alone."""
    name, _, k = str(c["valid_metric"]).partition("@")
    valid = EvalConfig(topk=(int(k),), metrics=(name,), valid_metric=str(c["valid_metric"]),
                       eval_batch_size=int(c["eval_batch_size"]))
    return BaselineSettings(
        seed=int(c["seed"]), device=device(c), epochs=int(c["epochs"]), train_batch_size=int(c["train_batch_size"]),
        eval_step=int(c["eval_step"]), learning_rate=float(c["learning_rate"]), weight_decay=float(c["weight_decay"]),
        stopping_step=int(c["stopping_step"]), embedding_size=int(c["embedding_size"]), n_layers=int(c["n_layers"]),
        reg_weight=float(c["reg_weight"]), reg_weight_grid=tuple(c["reg_weight_grid"]),
        k_grid=tuple(int(k) for k in c["k_grid"]), shrink=float(c["shrink"]), valid=valid)


def kg_settings(c: Config) -> KGSettings:
    return KGSettings(kg_eval_args=MappingProxyType(dict(c["kg_eval_args"])), finetune_loss=str(c["kg_finetune_loss"]),
                      fields=tuple(str(c[k]) for k in KG_FIELD_KEYS))  # type: ignore[arg-type]


def output_settings(c: Config) -> OutputSettings:
    topk = c["export_topk"]
    return OutputSettings(export_recommendations=bool(c["export_recommendations"]),
                          export_topk=None if topk is None else int(topk), show_examples=int(c["show_examples"]),
                          relation_phrases=MappingProxyType(dict(c["relation_phrases"] or {})))
