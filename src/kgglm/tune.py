"""Hyper-parameter search with Optuna over a hopwise/RecBole params file.

The params file has one parameter per line (``#`` starts a comment)::

    learning_rate loguniform -9,-6          # exp(uniform(-9, -6)), as in RecBole/hopwise
    embedding_size choice [128,256]
    dropout uniform 0.0,0.3
    warmup_steps quniform 50,250,50         # uniform rounded to a multiple of 50
    path_generation_args.num_beams choice [10,20]   # dotted names reach into mappings

Names are config keys (checked, with a did-you-mean). When every line is ``choice`` the search is
a grid (Optuna's GridSampler, the full grid by default), otherwise TPE. The study maximises each
trial's ``best_valid_score`` (``valid_metric``). ``storage='sqlite:///study.db'`` shares one study
between processes.

What a trial runs depends on the searched keys. When one of them changes the model or pre-training
(:func:`pretraining_keys`: model sizes, ``use_kg_token_types``, ``path_hop_length``, ``pretrain_*``,
``path_sample_args.pretrain_*``), a checkpoint pretrained with other values cannot stand for the trial,
so every trial runs :func:`kgglm.quick_start.run_pipeline` (pretrain, then finetune, in one run
directory) and a fixed ``pre_model_path`` is ignored. Otherwise every trial fine-tunes
``pre_model_path`` with :func:`kgglm.quick_start.run_kgglm`. A trial that raises (an invalid
combination such as ``embedding_size`` not divisible by ``num_heads``, a checkpoint that does not
fit, out of memory) is recorded as PRUNED with its reason in the ``error`` column and the study goes
on; pruned trials also steer TPE away from that region.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kgglm import durable
from kgglm.config import OVERALL_FILE, Config, ConfigError, _coerce, _suggest

logger = logging.getLogger(__name__)

SEARCH_TYPES = ("choice", "uniform", "loguniform", "quniform")


class ParamsFileError(ConfigError):
    """A malformed params file; the message names the file and line."""


@dataclass(frozen=True)
class Param:
    """One searched parameter: ``choice`` values, or ``uniform``/``loguniform``/``quniform`` bounds."""

    name: str
    kind: str
    values: tuple = ()  # choice
    low: float = 0.0
    high: float = 0.0
    q: float | None = None  # quniform step
    line: int = 0
    source: str = "<params>"

    def suggest(self, trial) -> Any:
        """The value Optuna suggests for this parameter in ``trial``."""
        if self.kind == "choice":
            labels = [_label(v) for v in self.values]
            return self.values[labels.index(trial.suggest_categorical(self.name, labels))]
        if self.kind == "uniform":
            return trial.suggest_float(self.name, self.low, self.high)
        if self.kind == "loguniform":  # bounds are exponents of e, as in RecBole/hopwise (hyperopt)
            return trial.suggest_float(self.name, math.exp(self.low), math.exp(self.high), log=True)
        if all(float(x).is_integer() for x in (self.low, self.high, self.q)):
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.q))
        return trial.suggest_float(self.name, self.low, self.high, step=self.q)


def _label(value: Any) -> Any:
    """Optuna categorical choices must be scalars: lists/dicts become their YAML flow text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip()


def parse_params_text(text: str, source: str = "<params>") -> list[Param]:
    """Parse a params file's text; ParamsFileError naming ``source`` and the line when malformed."""
    params: list[Param] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()  # '#' after a space starts a comment
        if not line:
            continue

        def fail(msg: str, lineno: int = lineno, raw: str = raw) -> ParamsFileError:  # bound to this line
            return ParamsFileError(f"{source}, line {lineno}: {msg} (line: {raw.strip()!r})")

        parts = line.split(None, 2)
        if len(parts) < 3:
            raise fail("expected 'name type values', e.g. 'learning_rate loguniform -9,-6' or "
                       "'embedding_size choice [128,256]'")
        name, kind, spec = parts
        if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)?", name):
            raise fail(f"bad parameter name {name!r}")
        if kind not in SEARCH_TYPES:
            raise fail(f"unknown search type {kind!r}{_suggest(kind, SEARCH_TYPES)}; expected one of "
                       f"{', '.join(SEARCH_TYPES)}")
        if name in seen:
            raise fail(f"parameter {name!r} already given on line {seen[name]}")
        seen[name] = lineno
        if kind == "choice":
            try:
                values = yaml.safe_load(spec)
            except yaml.YAMLError:
                raise fail("choice values must be a list like [1,2,3] or ['a','b']") from None
            if not isinstance(values, list) or not values:
                raise fail("choice values must be a non-empty list like [1,2,3]")
            labels = [_label(v) for v in values]
            if len(set(map(repr, labels))) != len(labels):
                raise fail("choice values must be distinct")
            params.append(Param(name, kind, values=tuple(values), line=lineno, source=source))
            continue
        want = 3 if kind == "quniform" else 2
        try:
            nums = [float(x) for x in spec.strip().strip("[]()").split(",")]
        except ValueError:
            nums = []
        example = "a,b,q (e.g. 50,250,50)" if kind == "quniform" else "a,b (e.g. 0.0,0.3)"
        if len(nums) != want or not all(math.isfinite(x) for x in nums):
            raise fail(f"{kind} needs {want} comma-separated numbers {example}")
        if not nums[0] < nums[1]:
            raise fail(f"{kind} needs a < b, got a={nums[0]:g}, b={nums[1]:g}")
        if kind == "quniform" and not 0 < nums[2] <= nums[1] - nums[0]:
            raise fail(f"quniform step q must be in (0, b-a], got q={nums[2]:g}")
        params.append(Param(name, kind, low=nums[0], high=nums[1],
                            q=nums[2] if kind == "quniform" else None, line=lineno, source=source))
    if not params:
        raise ParamsFileError(f"{source}: no parameters (one per line: 'name type values')")
    return params


def parse_params_file(path: str | os.PathLike) -> list[Param]:
    path = Path(path)
    if not path.is_file():
        raise ParamsFileError(f"params file {str(path)!r} not found")
    return parse_params_text(path.read_text(encoding="utf-8-sig"), str(path))


def params_to_config_dict(values: Mapping[str, Any]) -> dict:
    """``{'a.b': 1, 'c': 2}`` -> ``{'a': {'b': 1}, 'c': 2}`` (config_dict layout)."""
    out: dict = {}
    for name, value in values.items():
        if "." in name:
            parent, sub = name.split(".", 1)
            out.setdefault(parent, {})[sub] = value
        else:
            out[name] = value
    return out


def check_params(params: Iterable[Param]) -> None:
    """Every parameter must name a config key (did-you-mean otherwise) and its values fit its type."""
    defaults = yaml.safe_load(OVERALL_FILE.read_text())
    for p in params:
        parent, _, sub = p.name.partition(".")
        where = f"{p.source}, line {p.line}"
        if parent not in defaults:
            raise ParamsFileError(f"{where}: unknown config key {parent!r}{_suggest(parent, defaults)}")
        default = defaults[parent]
        if sub:
            if not isinstance(default, dict) or sub not in default:
                known = list(default) if isinstance(default, dict) else []
                raise ParamsFileError(f"{where}: unknown key {p.name!r}{_suggest(sub, known)}")
            default = default[sub]
        for value in p.values if p.kind == "choice" else (p.low, p.high):
            try:
                _coerce(p.name, value, default, "searched value")
            except ConfigError as exc:
                raise ParamsFileError(f"{where}: {exc}") from None


# Keys that fix the pretrained model: its size (a checkpoint of another size cannot be fine-tuned),
# and path_hop_length, which sets the context length the checkpoint must have. Together with every
# pretrain_* key (schedule and walk corpus), searching one of them means each trial pretrains.
MODEL_KEYS = ("embedding_size", "num_heads", "num_layers", "use_kg_token_types", "path_hop_length")


def pretraining_keys(names: Iterable[str]) -> list[str]:
    """The ``names`` (in order) that change the model or pre-training, so that a trial searching them
    must pretrain its own model instead of fine-tuning a fixed ``pre_model_path``."""
    found = []
    for name in names:
        parent, _, sub = name.partition(".")
        if (name in MODEL_KEYS or parent.startswith("pretrain_")
                or (parent == "path_sample_args" and (not sub or sub.startswith("pretrain_")))):
            found.append(name)
    return found


# ---------------------------------------------------------------------------------- search
@dataclass
class TuneResult:
    """Outcome of a search: the trials table, the best trial and where they were written."""

    best_params: dict
    best_value: float | None
    trials: list[dict] = field(default_factory=list)
    out_dir: Path | None = None
    files: dict = field(default_factory=dict)


def tune(
    params: list[Param],
    *,
    model: str = "KGGLM",
    dataset: str = "ml-100k",
    config_file_list: list[str] | None = None,
    config_dict: Mapping | None = None,
    n_trials: int | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    out_dir: str | os.PathLike | None = None,
    preset: str | None = None,
    objective_fn: Callable[[dict], tuple[float, dict]] | None = None,
) -> TuneResult:
    """Run the search. ``objective_fn(config_dict) -> (valid score, extra columns)`` replaces the
    default objective (``run_pipeline`` or ``run_kgglm``, see the module docstring), e.g. for tests
    of the search itself. An exception from a trial prunes that trial (reason in its ``error``
    column); the study goes on."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # we log each trial ourselves
    base = Config(model, dataset, config_file_list=config_file_list, config_dict=config_dict, preset=preset)
    check_params(params)
    searched = [p.name for p in params]
    both_stages = model == "KGGLM" and bool(pretraining_keys(searched))
    if both_stages:
        fixed = str(base["pre_model_path"]).strip()
        logger.info("searched %s change the model or pre-training: every trial pretrains and fine-tunes in its "
                    "own run directory%s", ", ".join(pretraining_keys(searched)),
                    f"; pre_model_path {fixed!r} is ignored" if fixed else "")
    elif (model == "KGGLM" and not {"train_stage", "pre_model_path"} & set(searched)
          and (base["train_stage"] != "finetune" or not str(base["pre_model_path"]).strip())):
        # checked once here: otherwise every trial would fail (and be pruned) for the same reason
        raise ConfigError("tune maximises valid_metric, which only fine-tuning computes: set train_stage: "
                          "finetune and pre_model_path (a pretrain checkpoint) in --config-files or "
                          "--key=value, or search a model-size or pretrain_* key so that every trial "
                          "pretrains its own model")
    grid = all(p.kind == "choice" for p in params)
    if grid:
        space = {p.name: [_label(v) for v in p.values] for p in params}
        sampler = optuna.samplers.GridSampler(space, seed=base["seed"])
        n_grid = math.prod(len(v) for v in space.values())
        n_trials = n_trials or n_grid
    else:
        sampler = optuna.samplers.TPESampler(seed=base["seed"])
        n_trials = n_trials or 10
    study_name = study_name or f"kgglm-{model}-{dataset}"
    study = optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True,
                                direction="maximize", sampler=sampler)
    if objective_fn is None:
        objective_fn = _run_objective(model, dataset, config_file_list, preset, both_stages)

    def objective(trial) -> float:
        values = {p.name: p.suggest(trial) for p in params}
        trial_dict = {**(dict(config_dict) if config_dict else {})}
        for key, value in params_to_config_dict(values).items():
            trial_dict[key] = {**trial_dict.get(key, {}), **value} if isinstance(value, dict) else value
        logger.info("trial %d%s: %s", trial.number, " (pretrain + finetune)" if both_stages else "", values)
        try:
            score, extra = objective_fn(trial_dict)
        except Exception as exc:  # one bad combination must not end the study: record why, go on
            reason = f"{type(exc).__name__}: {exc}"
            trial.set_user_attr("error", reason)
            logger.warning("trial %d pruned (the study goes on): %s", trial.number, reason)
            logger.debug("trial %d traceback", trial.number, exc_info=True)
            # PRUNED rather than FAIL: TPE ranks pruned trials below completed ones (it ignores failed ones),
            # so it learns to avoid the invalid region instead of proposing it again
            raise optuna.TrialPruned(reason) from exc
        for key, value in extra.items():
            trial.set_user_attr(key, value)
        logger.info("trial %d: %s = %.6g", trial.number, base["valid_metric"], score)
        return score

    logger.info("tuning %s on %s: %d trials, %s sampler, valid_metric %s", model, dataset, n_trials,
                "grid" if grid else "TPE", base["valid_metric"])
    study.optimize(objective, n_trials=n_trials)
    trials = [
        {"number": t.number, "state": t.state.name, **{f"param:{k}": v for k, v in t.params.items()},
         base["valid_metric"]: t.value, **t.user_attrs}
        for t in study.trials
    ]
    completed = [t for t in study.trials if t.value is not None]
    best = study.best_trial if completed else None
    if best is None:
        reasons = Counter(t.user_attrs.get("error", t.state.name) for t in study.trials)
        logger.error("no trial completed (%d trials); reasons: %s", len(study.trials),
                     "; ".join(f"{n}x {r}" for r, n in reasons.most_common()))
    best_params = {p.name: _from_label(p, best.params[p.name]) for p in params} if best else {}
    result = TuneResult(best_params, best.value if best else None, trials)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(out_dir) if out_dir else Path(base["checkpoint_dir"]) / f"tune-{model}-{dataset}-{stamp}"
    result.out_dir = out
    result.files = save_trials(result, out)
    return result


def _from_label(p: Param, value: Any) -> Any:
    if p.kind != "choice":
        return value
    labels = [_label(v) for v in p.values]
    return p.values[labels.index(value)]


def _run_objective(model: str, dataset: str, config_file_list: list[str] | None, preset: str | None,
                   both_stages: bool) -> Callable[[dict], tuple[float, dict]]:
    """The default objective: the whole job (pretrain + finetune, ``run_pipeline``) when ``both_stages``,
    else one stage (fine-tune ``pre_model_path``, ``run_kgglm``); returns the best valid score and
    extra columns."""

    def run(trial_dict: dict) -> tuple[float, dict]:
        from kgglm.tasks.run import run_task

        # the whole job skips pre-training when pre_model_path is set: clear it so the trial's own
        # model (its sizes, its pre-training) is pretrained, then fine-tuned from that checkpoint
        layer = {**trial_dict, "pre_model_path": ""} if both_stages else trial_dict
        config = Config(model, dataset, config_file_list=config_file_list, config_dict=layer, preset=preset)
        res = run_task(config, pipeline=both_stages)
        extra = {f"test:{k}": v for k, v in (res.test_result or {}).items() if isinstance(v, (int, float))}
        extra["stages"] = "pretrain+finetune" if both_stages else "finetune"
        extra["run_dir"] = str(res.run_dir)
        if res.best_valid_score is None:
            raise RuntimeError("the run produced no validation score (is train_stage finetune?)")
        return float(res.best_valid_score), extra

    return run


def save_trials(result: TuneResult, out_dir: Path) -> dict:
    """Write trials.csv, trials.json and best_params.yaml into ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for row in result.trials for k in row))
    files = {"trials_csv": out_dir / "trials.csv", "trials_json": out_dir / "trials.json",
             "best_params": out_dir / "best_params.yaml"}
    with durable.open_atomic(files["trials_csv"], "w", encoding=None, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(result.trials)
    for key, text in (("trials_json", json.dumps(result.trials, indent=2, default=str)),
                      ("best_params", yaml.safe_dump({"best_value": result.best_value,
                                                      "best_params": result.best_params}, sort_keys=False))):
        durable.write_text(files[key], text, encoding=None)
    return {k: str(v) for k, v in files.items()}


def format_trials(trials: list[dict]) -> str:
    """The trials as an aligned text table."""
    if not trials:
        return "(no trials)"
    columns = [c for c in dict.fromkeys(k for row in trials for k in row) if c != "run_dir"]

    def cell(v: Any) -> str:
        text = f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))
        return text if len(text) <= 80 else text[:77] + "..."  # long error messages: full text in trials.csv

    rows = [[cell(r.get(c)) for c in columns] for r in trials]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)
