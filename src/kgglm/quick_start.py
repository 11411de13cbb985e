"""Quick start: one call runs a stage of KGGLM (or the Pop baseline) end to end, as in RecBole.

    from kgglm.quick_start import run_kgglm
    run_kgglm(model='KGGLM', dataset='ml-100k', config_dict={'train_stage': 'pretrain', 'pretrain_epochs': 5})
    run_kgglm(model='KGGLM', dataset='ml-100k',
              config_dict={'train_stage': 'finetune', 'pre_model_path': 'saved/KGGLM-pretrain/'})

Every call writes one run directory ``CHECKPOINT_DIR/<model>-<dataset>-<stage>-<time>/`` holding
``config.yaml`` (resolved config), ``run.log``, ``result.json`` (metrics) and, for fine-tuning, the
checkpoints (``checkpoint/best`` is the best validation epoch) and ``recommendations.jsonl``. The
pre-training checkpoint goes to ``CHECKPOINT_DIR/KGGLM-pretrain/`` (hopwise's place), where
``pre_model_path`` finds the newest one. :func:`run_pipeline` runs pretrain, finetune and test in
one run directory (``kgglm run``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kgglm.config import Config, ConfigError
from kgglm.logging_utils import log_to_file
from kgglm.runner import (PRETRAIN_DIR, evaluate_checkpoint, evaluate_pop, finetune_stage, load_dataset_for,
                          pretrain_stage, recommend_from_checkpoint)

__all__ = ["RunResult", "evaluate_checkpoint", "recommend_from_checkpoint", "run", "run_kgglm", "run_pipeline"]

logger = logging.getLogger(__name__)

RESULT_FILE = "result.json"
SHARE_KEYS = ("path_coverage", "valid_paths", "score")


@dataclass
class RunResult:
    """What a run produced (PyKEEN-style): scores, metrics, checkpoint and the files written."""

    model: str
    dataset: str
    train_stage: str | None
    best_valid_score: float | None = None
    best_valid_result: dict | None = None
    test_result: dict | None = None
    baseline_test_result: dict | None = None  # Pop on the same test split (run_pipeline)
    checkpoint: str | None = None
    run_dir: str | None = None
    files: dict = field(default_factory=dict)
    train_stats: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    examples: list = field(default_factory=list)  # a few explained recommendations
    config: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, directory: str | os.PathLike | None = None) -> Path:
        """Write ``result.json`` into ``directory`` (default: the run directory); return its path."""
        directory = Path(directory or self.run_dir or ".")
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / RESULT_FILE
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, default=_json_default))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "RunResult":
        path = Path(path)
        path = path / RESULT_FILE if path.is_dir() else path
        return cls(**json.loads(path.read_text()))

    def metrics_table(self) -> dict[str, dict]:
        """Columns of the metrics table: best validation, test, and the Pop baseline when known."""
        cols = {}
        if self.best_valid_result:
            cols[f"{self.model} valid"] = self.best_valid_result
        if self.test_result:
            cols[f"{self.model} test"] = self.test_result
        if self.baseline_test_result:
            cols["Pop test"] = self.baseline_test_result
        return cols


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# ---------------------------------------------------------------------------------- entry points
def run_kgglm(
    model: str = "KGGLM",
    dataset: str = "ml-100k",
    config_file_list: Iterable[str] | None = None,
    config_dict: Mapping | None = None,
    saved: bool = True,
    *,
    cmd_args: Iterable[str] | Mapping | None = None,
    preset: str | None = None,
) -> RunResult:
    """Run one stage: ``train_stage`` pretrain or finetune for KGGLM, or evaluate ``model='Pop'``.

    ``config_file_list``/``config_dict``/``cmd_args`` are config layers (see :mod:`kgglm.config`).
    With ``saved=False`` the run directory (checkpoints included) is removed afterwards and the
    result carries only the metrics.
    """
    config = Config(model, dataset, config_file_list=config_file_list, config_dict=config_dict,
                    cmd_args=cmd_args, preset=preset)
    stage = config["train_stage"] if model == "KGGLM" else None
    if stage == "finetune" and not str(config["pre_model_path"]).strip():
        raise ConfigError("train_stage 'finetune' needs pre_model_path: the pretrain checkpoint directory, "
                          f"e.g. {Path(config['checkpoint_dir']) / PRETRAIN_DIR}/")
    run_dir = make_run_dir(config, stage or "eval")
    result = RunResult(model, dataset, stage, run_dir=str(run_dir), config=config.to_dict())
    start = time.perf_counter()
    with log_to_file(run_dir / "run.log", config["state"]) as log_path:
        _start(config, run_dir, result, log_path)
        data = load_dataset_for(config)
        if model == "Pop":
            result.best_valid_result = evaluate_pop(config, data, "valid")
            result.best_valid_score = result.best_valid_result["score"]
            result.test_result = evaluate_pop(config, data, "test")
        elif stage == "pretrain":
            ckpt_dir = Path(config["checkpoint_dir"]) / PRETRAIN_DIR
            pretrain_stage(config, data, ckpt_dir, result)
        else:
            finetune_stage(config, data, config["pre_model_path"], run_dir, result)
        _finish(result, start)
    if not saved:
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)
        result.run_dir, result.files = None, {}
    return result


def run(model: str = "KGGLM", dataset: str = "ml-100k", config_file_list=None, config_dict=None,
        saved: bool = True, **kwargs) -> RunResult:
    """Alias of :func:`run_kgglm` (RecBole's ``run`` spelling)."""
    return run_kgglm(model, dataset, config_file_list, config_dict, saved, **kwargs)


def run_pipeline(
    model: str = "KGGLM",
    dataset: str = "ml-100k",
    config_file_list: Iterable[str] | None = None,
    config_dict: Mapping | None = None,
    *,
    cmd_args: Iterable[str] | Mapping | None = None,
    preset: str | None = None,
) -> RunResult:
    """The whole job in one run directory: pretrain, finetune (validation, early stopping), test,
    the Pop baseline on the same split, the recommendations export and a few explained examples.
    With ``pre_model_path`` set, pre-training is skipped and that model is fine-tuned."""
    config = Config(model, dataset, config_file_list=config_file_list, config_dict=config_dict,
                    cmd_args=cmd_args, preset=preset)
    if model == "Pop":
        return run_kgglm(model, dataset, config_file_list, config_dict, cmd_args=cmd_args, preset=preset)
    run_dir = make_run_dir(config, "run")
    result = RunResult(model, dataset, "pretrain+finetune", run_dir=str(run_dir), config=config.to_dict())
    start = time.perf_counter()
    with log_to_file(run_dir / "run.log", config["state"]) as log_path:
        _start(config, run_dir, result, log_path)
        data = load_dataset_for(config)
        if str(config["pre_model_path"]).strip():  # an existing pretrained model: fine-tune it
            logger.info("pre_model_path is set: skipping pre-training, fine-tuning %s", config["pre_model_path"])
        else:
            pre = RunResult(model, dataset, "pretrain")
            pretrain_stage(config, data, run_dir / "pretrain", pre)
            result.files["pretrain_checkpoint"] = pre.checkpoint
            result.train_stats["pretrain"] = pre.train_stats
            config["pre_model_path"] = pre.checkpoint
        config["train_stage"] = "finetune"
        finetune_stage(config, data, config["pre_model_path"], run_dir, result)
        result.baseline_test_result = evaluate_pop(config, data, "test")
        _finish(result, start)
    return result


# ---------------------------------------------------------------------------------- helpers
def make_run_dir(config: Config, stage: str) -> Path:
    """A new directory ``CHECKPOINT_DIR/<model>-<dataset>-<stage>-<YYYYmmdd-HHMMSS>[-n]``; with
    ``resume``, the newest existing one of that model, dataset and stage (its checkpoints resume)."""
    prefix = f"{config.model}-{config.dataset}-{stage}-"
    if config["resume"]:
        previous = [p for p in Path(config["checkpoint_dir"]).glob(prefix + "*") if p.is_dir()]
        if previous:
            found = max(previous, key=lambda p: p.stat().st_mtime)
            logger.info("resume: continuing in %s", found)
            return found
        logger.warning("resume: no earlier %s* run directory in %s; starting a new run", prefix, config["checkpoint_dir"])
    base = Path(config["checkpoint_dir"]) / f"{prefix}{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1000):
        path = base if n == 0 else base.with_name(f"{base.name}-{n}")
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"cannot create a run directory next to {base}")


def seed_everything(seed: int, reproducibility: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.deterministic = bool(reproducibility)
    torch.backends.cudnn.benchmark = not reproducibility


def _start(config: Config, run_dir: Path, result: RunResult, log_path: Path) -> None:
    seed_everything(config["seed"], config["reproducibility"])
    result.files["config"] = str(config.save(run_dir))
    result.files["log"] = str(log_path)
    logger.info("run directory %s", run_dir)
    logger.info("config (%s; non-default keys): %s", result.files["config"], config.changed())
    logger.debug("resolved config:\n%s", config)


def _finish(result: RunResult, start: float) -> None:
    result.seconds = round(time.perf_counter() - start, 2)
    if result.run_dir:
        result.files["result"] = str(Path(result.run_dir) / RESULT_FILE)
        result.save()
    cols = result.metrics_table()
    if cols:
        logger.info("metrics:\n%s", format_metrics(cols))
    logger.info("done in %.1fs; results in %s", result.seconds, result.files.get("result"))


def format_metrics(columns: Mapping[str, Mapping[str, Any]]) -> str:
    """A text table: one row per metric, one column per result (e.g. valid, test, Pop test)."""
    if not columns:
        return "(no metrics)"
    names = list(dict.fromkeys(k for col in columns.values() for k in col))
    width = max(len(n) for n in names)
    heads = list(columns)
    widths = [max(len(h), 8) for h in heads]

    def cell(name: str, v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float) and ("@" in name or name in SHARE_KEYS):
            return f"{v:.4f}"  # metrics and shares
        if isinstance(v, float) and v.is_integer():
            return str(int(v))  # counts (the trainer's history stores every value as a float)
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = [" " * width + "  " + "  ".join(h.rjust(w) for h, w in zip(heads, widths))]
    for n in names:
        lines.append(n.ljust(width) + "  " + "  ".join(cell(n, columns[h].get(n)).rjust(w)
                                                       for h, w in zip(heads, widths)))
    return "\n".join(lines)


def format_examples(examples: list[dict]) -> str:
    """Explained recommendations as text: a block per user, one line per item with its path."""
    lines = []
    for ex in examples:
        lines.append(f"user {ex['user']}:")
        for rec in ex["recommendations"]:
            lines.append(f"  {rec['rank']:>2}. {rec['item_name']}  (score {rec['score']:.3f})")
            if rec.get("explanation"):
                lines.append(f"      {rec['explanation']}")
        if not ex["recommendations"]:
            lines.append("  (no item reachable)")
    return "\n".join(lines)
