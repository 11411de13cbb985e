"""The recommendation task: its stages and their recipe, wired from a :class:`~kgglm.settings.RunSettings`.

Each stage takes the run's settings (resolved once from the layered config) and the dataset and
*returns* a frozen result (PyKEEN's pipeline helpers are the model); :func:`run_recommendation`
runs the stages a job asks for and returns a :class:`RecommendationResult`, which
:mod:`kgglm.tasks.run` turns into the run's ``RunResult``.

* :func:`pretrain_stage`: sample KG walks, train a fresh model, checkpoint;
* :func:`finetune_stage`: sample user paths, fine-tune from ``pre_model_path`` with validation
  early stopping, reload the best checkpoint, evaluate on test, export the recommendations;
* :func:`baseline_stage`: fit a baseline (Pop, BPR, ...) with the same validation protocol and
  evaluate it on valid and test;
* :func:`load_for_inference`: ``(model, vocab, data, settings)`` from a checkpoint directory alone
  (its ``config.json`` carries the resolved run config and the dataset folder, so the dataset,
  graph and seen items are rebuilt exactly: same files, same seeded split).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from kgglm import distributed
from kgglm.config import Config
from kgglm.data import Dataset, load_dataset
from kgglm.data.audit import warn_if_suspect
from kgglm.data.locate import find_dataset
from kgglm.decode.explain import explained, path_strings
from kgglm.decode.generation import PathGenerationConfig
from kgglm.decode.recommend import recommend, write_recommendations
from kgglm.evaluate.evaluator import EvalConfig, Evaluation
from kgglm.evaluate.ranked import Recommendations
from kgglm.model.gpt import KGGLM
from kgglm.model.init import no_weight_init
from kgglm.paths.corpus import stage_corpus
from kgglm.paths.vocab import VOCAB_FILE, Vocabulary
from kgglm.settings import RunSettings, as_settings, resolve
from kgglm.tasks.history_expert import choose_history_weight, fit_expert
from kgglm.tasks.models import ModelBuilder
from kgglm.tasks.ranking import evaluate_model
from kgglm.train import checkpoint as ckpt
from kgglm.train.trainer import train

logger = logging.getLogger(__name__)

PRETRAIN_DIR = "KGGLM-pretrain"  # CHECKPOINT_DIR/KGGLM-pretrain/, as in hopwise
CONFIG_META_KEY = "kgglm_config"
RECOMMENDATIONS_FILE = "recommendations.jsonl"


@dataclass(frozen=True)
class PretrainResult:
    """What pre-training produced: the checkpoint and training statistics."""

    checkpoint: str
    train_stats: dict


@dataclass(frozen=True)
class FinetuneResult:
    """What fine-tuning produced: the best checkpoint, validation and test metrics, the test lists."""

    checkpoint: str
    best_valid_score: float | None
    best_valid_result: dict | None
    test_result: dict
    history: list
    train_stats: dict
    recommendations: Recommendations
    files: dict = field(default_factory=dict)
    examples: list = field(default_factory=list)


@dataclass(frozen=True)
class BaselineResult:
    """A baseline's validation and test metrics (validation chose its epoch, if it trains)."""

    name: str
    valid_result: dict
    test_result: dict
    train_stats: dict


@dataclass(frozen=True)
class RecommendationResult:
    """The stages one recommendation run ran: ``pretrain`` and/or ``finetune`` for KGGLM, or
    ``baseline`` when the run's model is a baseline; ``baselines`` compared on the same split."""

    pretrain: PretrainResult | None = None
    finetune: FinetuneResult | None = None
    baseline: BaselineResult | None = None
    baselines: tuple[BaselineResult, ...] = ()


RECOMMENDATION_STAGES = ("pretrain", "finetune", "pipeline", "baseline")


def run_recommendation(settings: RunSettings, data: Dataset, run_dir: Path, stage: str) -> RecommendationResult:
    """The recipe of ``stage``: ``pretrain`` (into ``CHECKPOINT_DIR/KGGLM-pretrain/``), ``finetune``
    (from ``pre_model_path``), ``baseline`` (fit and evaluate the config's baseline model), or
    ``pipeline``: pretrain (skipped when ``pre_model_path`` is set; none when ``pretrain_epochs`` is
    0, the ablation), finetune, test, then the ``baselines`` on the same split."""
    run = settings.run
    if stage == "baseline":
        return RecommendationResult(baseline=baseline_stage(settings, data))
    if stage == "pretrain":
        into = Path(run.checkpoint_dir) / PRETRAIN_DIR
        return RecommendationResult(pretrain=pretrain_stage(settings, data, into))
    if stage == "finetune":
        return RecommendationResult(finetune=finetune_stage(settings, data, run.pre_model_path, run_dir))
    if stage != "pipeline":
        raise ValueError(f"stage must be one of {RECOMMENDATION_STAGES}, got {stage!r}")
    pre, pre_model_path = None, run.pre_model_path  # the settings are never rewritten
    if pre_model_path.strip():  # an existing pretrained model: fine-tune it
        logger.info("pre_model_path is set: skipping pre-training, fine-tuning %s", pre_model_path)
    elif run.pretrain_epochs == 0:  # no pre-training at all (the ablation)
        pre_model_path = None
    else:
        pre = pretrain_stage(settings, data, run_dir / "pretrain")
        pre_model_path = pre.checkpoint
    tuned = finetune_stage(settings, data, pre_model_path, run_dir)
    return RecommendationResult(pretrain=pre, finetune=tuned,
                                baselines=tuple(baseline_stage(settings, data, name) for name in run.baselines))


def load_dataset_for(settings: RunSettings | Config, *, audit: bool = True) -> Dataset:
    """The run's dataset (its data section); with ``audit``, a warning is logged when its KG fails the
    co-interaction audit (:mod:`kgglm.data.audit`)."""
    settings = as_settings(settings)
    logger.info("loading dataset %s", settings.run.dataset)
    data = load_dataset(settings.run.dataset, settings.data)
    if audit:
        warn_if_suspect(data)
    return data


def _meta(settings: RunSettings, data: Dataset, **resolved) -> dict:
    """Checkpoint metadata: the run config (with the ``resolved`` values this stage actually used,
    e.g. its ``pre_model_path``) and the dataset folder."""
    path = data.stats.get("path")
    return {CONFIG_META_KEY: {**settings.config.to_dict(), **resolved},
            "dataset_path": str(Path(path).resolve()) if path else None}


def _train_stats(tr, n_paths: int) -> dict:
    return {"steps": tr.step, "epochs": tr.epochs_completed, "last_loss": tr.last_loss, "corpus_paths": n_paths,
            "paths_per_second": round(tr.paths_per_second, 1), "stopped_early": tr.stopped_early,
            "losses": [[int(s), float(v)] for s, v in tr.losses]}  # the report's loss curve


# ---------------------------------------------------------------------------------- stages
def pretrain_stage(settings: RunSettings, data: Dataset, ckpt_dir: Path) -> PretrainResult:
    """Sample KG walks, train a fresh model on them, checkpoint into ``ckpt_dir``."""
    builder = ModelBuilder.for_dataset(data, settings.model)
    sampling = settings.sampling
    tokens = stage_corpus(data, builder.vocab, sampling, "pretrain")
    logger.info("pretrain corpus: %d paths of up to %d tokens", tokens.shape[0], tokens.shape[1])
    model = builder.fresh(sampling.context_length)
    logger.info("model: %.2fM parameters", model.num_parameters() / 1e6)
    tr = train(model, tokens, settings.train["pretrain"], checkpoint_dir=ckpt_dir,
               vocab=builder.vocab, extra_meta=_meta(settings, data))
    logger.info("pretrained checkpoint: %s (final loss %.4f)", tr.last_checkpoint, tr.last_loss)
    return PretrainResult(checkpoint=str(tr.last_checkpoint), train_stats=_train_stats(tr, tokens.shape[0]))


def finetune_stage(settings: RunSettings, data: Dataset, pre_model_path: str | os.PathLike | None,
                   run_dir: Path) -> FinetuneResult:
    """Fine-tune from ``pre_model_path`` on user paths with validation early stopping, then test.

    ``pre_model_path=None`` trains a freshly initialised model on the user paths alone (no
    pre-training: PEARLM's setting, the ablation of the paper's central claim)."""
    builder, device = ModelBuilder.for_dataset(data, settings.model), settings.run.device
    vocab = builder.vocab
    tokens = stage_corpus(data, vocab, settings.sampling, "finetune")
    logger.info("finetune corpus: %d user paths", tokens.shape[0])
    if pre_model_path is None:
        model = builder.fresh(tokens.shape[1], history=True, device=device)
        logger.info("no pre-training: fine-tuning a fresh model (%.2fM parameters)", model.num_parameters() / 1e6)
    else:
        model, _ = builder.pretrained(pre_model_path, tokens.shape[1], history=True, device=device)
    attach_history(model, data, vocab)
    generation, measure = settings.generation, settings.eval
    expert_fit = fit_expert(model, data, vocab, settings.expert.fit, measure)

    def evaluate_fn(m: KGGLM) -> tuple[float, dict]:
        ev = evaluate_model(m, data, "valid", measure, vocab=vocab, generation=generation)
        return ev.score, ev.metrics

    tr = train(model, tokens, settings.train["finetune"], checkpoint_dir=run_dir / "checkpoint",
               vocab=vocab, extra_meta=_meta(settings, data, train_stage="finetune", pre_model_path=pre_model_path),
               evaluate_fn=evaluate_fn)
    best = tr.best_checkpoint or tr.last_checkpoint
    ckpt.load_weights(model, best)
    valid_score, valid_metrics = tr.best_score, tr.best_metrics
    if expert_fit is not None:  # the valid figures are then the chosen weight's
        generation, valid_score, valid_metrics = choose_history_weight(model, data, vocab, settings.expert.weight_grid,
                                                                       measure, generation, valid_score, valid_metrics)
        if distributed.is_main():  # [distributed] rank 0 alone writes the checkpoint
            _record_generation(best, model, vocab, generation)
    test = evaluate_model(model, data, "test", measure, vocab=vocab, generation=generation,
                          show_progress=settings.run.show_progress)
    files, examples = _export(model, data, vocab, settings, test, generation, run_dir) \
        if distributed.is_main() else ({}, [])  # [distributed] rank 0 alone exports (and explains)
    stats = _train_stats(tr, tokens.shape[0])
    if expert_fit is not None:
        stats["history_expert"] = {**expert_fit.to_dict(), "history_weight": generation.history_weight}
    return FinetuneResult(checkpoint=str(best), best_valid_score=valid_score, best_valid_result=valid_metrics,
                          test_result=test.metrics, history=tr.history, train_stats=stats,
                          recommendations=test.recommendations, files=files, examples=examples)


def _export(model: KGGLM, data: Dataset, vocab: Vocabulary, settings: RunSettings, test: Evaluation,
            generation: PathGenerationConfig, run_dir: Path) -> tuple[dict, list]:
    """``(files, examples)``: the recommendations export (when ``export_recommendations``) and a few
    explained test users, with readable node names for the report's path drawings."""
    out = settings.output
    export = export_recommendations(model, data, vocab, test, settings.eval, generation, export_topk=out.export_topk)
    files = {}
    if out.export_recommendations:
        path = write_recommendations(export, data, vocab, run_dir / RECOMMENDATIONS_FILE, out.relation_phrases)
        files["recommendations"] = str(path)
    examples = explained(export, data, vocab, limit=out.show_examples, k=min(5, settings.eval.max_k),
                         phrases=out.relation_phrases)
    for r, example in enumerate(examples):
        for rank, row in enumerate(example["recommendations"]):
            row["path_names"] = path_strings(data, vocab, export.paths[r, rank])
    return files, examples


def _record_generation(path, model: KGGLM, vocab: Vocabulary, generation: PathGenerationConfig) -> None:
    """Rewrite checkpoint ``path`` (atomically) with the ``history_weight`` chosen on valid in its saved
    config, so that ``kgglm evaluate``/``recommend``/``serve`` rank as the run did."""
    info = ckpt.read_info(path)
    meta = dict(info["meta"])
    saved = dict(meta.get(CONFIG_META_KEY) or {})
    saved["path_generation_args"] = {**(saved.get("path_generation_args") or {}),
                                     "history_weight": generation.history_weight}
    meta[CONFIG_META_KEY] = saved
    ckpt.save_checkpoint(path, model, vocab, train_config=info.get("training"), meta=meta)


def attach_history(model: KGGLM, data: Dataset, vocab: Vocabulary) -> None:
    """Give a history-conditioned model its users' *training* items (never valid/test: the history is
    the model's input when it ranks valid and test items too), and a KG-reading expert its items'
    features; a no-op for other models."""
    if not (model.config.user_history or model.config.history_expert_dim):
        return
    indptr, items = data.split_items("train")
    lo = vocab.node_offset
    model.set_user_history(torch.from_numpy(np.asarray(indptr, dtype=np.int64)),
                           torch.from_numpy(np.asarray(items, dtype=np.int64) + lo + vocab.n_users),
                           (lo, lo + vocab.n_users), (lo + vocab.n_users, lo + vocab.n_users + vocab.n_items))
    if model.expert is not None and model.expert.n_features:  # its KG inputs: feature nodes -> columns
        feature_items, feature_nodes = data.item_features()
        _, column = np.unique(feature_nodes, return_inverse=True)
        model.expert.set_features(torch.tensor(feature_items), torch.from_numpy(column.reshape(-1)))


def export_recommendations(model, data: Dataset, vocab: Vocabulary, test: Evaluation, settings: EvalConfig,
                           generation: PathGenerationConfig, *, export_topk: int | None = None) -> Recommendations:
    """The test lists to export: the evaluated ones, or a separate decode when the export asks for
    more items per user (``export_topk``/``paths_per_user``); the metrics never depend on it."""
    want = max(int(export_topk or 0), int(generation.paths_per_user or 0))
    if want <= test.recommendations.topk:
        return test.recommendations
    return recommend(model, data, test.recommendations.users, vocab=vocab, generation=generation, n_return=want,
                     split="test", batch_size=settings.eval_batch_size)


def baseline_stage(settings: RunSettings, data: Dataset, name: str | None = None) -> BaselineResult:
    """Fit baseline ``name`` (default: the run's model) with validation early stopping, then
    evaluate it on valid (its best state) and test, through the same evaluation as KGGLM."""
    from kgglm.baselines import get_baseline

    name = name or settings.run.model
    model = get_baseline(name)()
    measure = settings.eval

    def evaluate_fn(m) -> tuple[float, dict]:
        ev = evaluate_model(m, data, "valid", measure)
        return ev.score, ev.metrics

    stats = model.fit(data, baseline_settings(settings, name), evaluate_fn=evaluate_fn)
    return BaselineResult(name=name, valid_result=evaluate_model(model, data, "valid", measure).metrics,
                          test_result=evaluate_model(model, data, "test", measure).metrics,
                          train_stats=dict(stats or {}))


def baseline_settings(settings: RunSettings, name: str):
    """The :class:`~kgglm.baselines.base.BaselineSettings` baseline ``name`` trains with: the run's,
    or, when the run is another model's (``kgglm run --baselines=BPR``), the same data/evaluation
    keys over that baseline's own model defaults (``configs/model/<NAME>.yaml``)."""
    if name == settings.run.model:
        return settings.baseline
    config = settings.config
    keep = {k: config[k] for k in ("seed", "device", "use_gpu", "show_progress", "data_path", "checkpoint_dir")}
    return resolve(Config(name, config.dataset, config_dict={**keep, **_data_keys(config)})).baseline


def _data_keys(config: Config) -> dict:
    keys = ("USER_ID_FIELD", "ITEM_ID_FIELD", "HEAD_ENTITY_ID_FIELD", "RELATION_ID_FIELD", "TAIL_ENTITY_ID_FIELD",
            "ENTITY_ID_FIELD", "TIME_FIELD", "benchmark_filename", "eval_args", "topk", "metrics", "valid_metric",
            "eval_batch_size")
    return {k: config[k] for k in keys}


# ---------------------------------------------------------------------------------- from a checkpoint
def resolve_model_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint to serve from ``path``: a checkpoint itself, a run directory (its best
    checkpoint), a fine-tuning checkpoint folder (``best/``), or the newest checkpoint inside."""
    p = Path(path)
    for candidate in (p, p / "checkpoint" / "best", p / "best"):
        if ckpt.is_checkpoint(candidate):
            return candidate
    if (p / "checkpoint").is_dir():
        return ckpt.resolve_checkpoint(p / "checkpoint")
    return ckpt.resolve_checkpoint(p)


def load_for_inference(path, *, data_path=None, cmd_args: Iterable[str] | Mapping | None = None):
    """``(model, vocab, data, settings)`` rebuilt from a checkpoint directory alone (``settings``: its
    saved config, with ``cmd_args`` on top, resolved by :func:`kgglm.settings.resolve`)."""
    where = resolve_model_checkpoint(path)
    info = ckpt.read_info(where)
    stored = dict(info["meta"].get(CONFIG_META_KEY) or {})
    if not stored:
        raise ckpt.CheckpointError(f"{where / ckpt.CONFIG_FILE}: no field meta.{CONFIG_META_KEY} (the run config); "
                                   "it was not written by kgglm train/run")
    model_name, dataset = stored.pop("model", "KGGLM"), stored.pop("dataset")
    stored.pop("preset", None)
    dataset_path = info["meta"].get("dataset_path")
    if data_path:
        stored["data_path"] = str(data_path)  # asked for: a known dataset missing there is downloaded
    elif dataset_path and Path(dataset_path).is_dir():
        stored["data_path"] = str(Path(dataset_path).parent)  # the folder that holds DATASET/
    elif find_dataset(dataset, stored.get("data_path")) is None:  # never download without being asked
        raise ckpt.CheckpointError(
            f"{where}: its dataset folder {dataset_path or dataset!r} is missing; pass --data-path DIR, the folder "
            f"that holds {dataset}/ (a known dataset missing there is downloaded into DIR)")
    settings = resolve(Config(model_name, dataset, config_dict=stored, cmd_args=cmd_args))
    data = load_dataset_for(settings, audit=False)  # audited when it was trained
    model, vocab, _ = ckpt.load_checkpoint(where, device=settings.run.device)
    if vocab.dataset and vocab.dataset != data.name:
        raise ckpt.CheckpointError(f"{where / VOCAB_FILE}: the vocabulary belongs to dataset {vocab.dataset!r}, "
                                   f"but the checkpoint is used with {data.name!r}")
    try:
        vocab.check_dataset(data)
    except ValueError as exc:
        raise ckpt.CheckpointError(f"{where}: the dataset changed since training: {exc}") from None
    attach_history(model, data, vocab)
    logger.info("loaded %s (dataset %s)", where, dataset)
    return model, vocab, data, settings


def evaluate_checkpoint(path, split: str = "test", *, data_path=None, cmd_args=None) -> dict:
    """Metrics of a fine-tuned checkpoint on ``split`` (as in the run that trained it)."""
    model, vocab, data, settings = load_for_inference(path, data_path=data_path, cmd_args=cmd_args)
    return evaluate_model(model, data, split, settings.eval, vocab=vocab, generation=settings.generation).metrics


def recommend_for_users(model, vocab: Vocabulary, data: Dataset, settings: RunSettings, user_ids: Iterable[str],
                        k: int = 10) -> list[dict]:
    """Top-``k`` unseen items (not in train or valid) with explanation paths for original user ids."""
    from kgglm.config import ConfigError

    try:
        users = data.user_index(np.array([str(u) for u in user_ids], dtype=object))
    except KeyError as exc:
        raise ConfigError(f"{exc.args[0]} in dataset {data.name} (ids are the {settings.data.USER_ID_FIELD} values "
                          f"of its .inter file, e.g. {str(data.user_tokens[0])!r})") from None
    recs = recommend(model, data, users, vocab=vocab, generation=settings.generation, n_return=int(k), split="test",
                     batch_size=settings.eval.eval_batch_size)
    return explained(recs, data, vocab, phrases=settings.output.relation_phrases)


def recommend_from_checkpoint(path, user_ids: Iterable[str], k: int = 10, *, data_path=None,
                              cmd_args=None, skip_weight_init: bool = False) -> list[dict]:
    """:func:`recommend_for_users` from a checkpoint directory. ``skip_weight_init``: build the model
    without its random initialisation (:func:`kgglm.model.init.no_weight_init`; the checkpoint
    overwrites every weight), for a one-shot command, not a server."""
    with no_weight_init() if skip_weight_init else contextlib.nullcontext():
        model, vocab, data, settings = load_for_inference(path, data_path=data_path, cmd_args=cmd_args)
    return recommend_for_users(model, vocab, data, settings, user_ids, k)
