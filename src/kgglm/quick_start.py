"""Quick start: one call runs a stage of KGGLM (or fits and evaluates a baseline) end to end, as in RecBole.

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

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kgglm import distributed, durable
from kgglm.config import Config, ConfigError
from kgglm.logging_utils import log_to_file
from kgglm.runs import make_run_dir, seed_everything
from kgglm.tasks.recommendation import (
    PRETRAIN_DIR,
    BaselineResult,
    FinetuneResult,
    baseline_stage,
    evaluate_checkpoint,
    finetune_stage,
    load_dataset_for,
    pretrain_stage,
    recommend_from_checkpoint,
)

__all__ = ["RunResult", "evaluate_checkpoint", "recommend_from_checkpoint", "run", "run_kgglm", "run_pipeline"]

logger = logging.getLogger(__name__)

RESULT_FILE = "result.json"


@dataclass
class RunResult:
    """What a run produced (PyKEEN-style): scores, metrics, checkpoint and the files written."""

    model: str
    dataset: str
    train_stage: str | None
    best_valid_score: float | None = None
    best_valid_result: dict | None = None
    test_result: dict | None = None
    baselines: dict = field(default_factory=dict)  # name -> {"valid": ..., "test": ...} on the same split
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
        return durable.write_json(path, self.to_dict(), indent=2, default=_json_default)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "RunResult":
        path = Path(path)
        path = path / RESULT_FILE if path.is_dir() else path
        return cls(**json.loads(path.read_text()))

    def metrics_table(self) -> dict[str, dict]:
        """Columns of the metrics table: best validation, test, and each baseline's test when run."""
        cols = {}
        if self.best_valid_result:
            cols[f"{self.model} valid"] = self.best_valid_result
        if self.test_result:
            cols[f"{self.model} test"] = self.test_result
        for name, res in self.baselines.items():
            cols[f"{name} test"] = res["test"]
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
    """Run one stage: ``train_stage`` pretrain or finetune for KGGLM, or fit and evaluate a baseline
    (``model='Pop'``, ``'BPR'``, ``'LightGCN'``, ``'KGItemKNN'``).

    ``config_file_list``/``config_dict``/``cmd_args`` are config layers (see :mod:`kgglm.config`).
    With ``saved=False`` the run directory (checkpoints included) is removed afterwards and the
    result carries only the metrics.
    """
    config = Config(model, dataset, config_file_list=config_file_list, config_dict=config_dict,
                    cmd_args=cmd_args, preset=preset)
    if config["task"] == "kg_completion":
        if model != "KGGLM":
            raise ConfigError(f"task kg_completion runs KGGLM (its KGE baselines: benchmarks/bench_kg_completion.py), "
                              f"not {model}")
        return _run_kg_completion(config, saved)
    stage = config["train_stage"] if model == "KGGLM" else None
    if stage == "finetune" and not str(config["pre_model_path"]).strip():
        raise ConfigError("train_stage 'finetune' needs pre_model_path: the pretrain checkpoint directory, "
                          f"e.g. {Path(config['checkpoint_dir']) / PRETRAIN_DIR}/")
    with _managed_run(config, stage or "eval", stage, saved) as (result, run_dir):
        data = load_dataset_for(config)
        if model != "KGGLM":
            base = baseline_stage(config, data)
            result.best_valid_result, result.test_result = base.valid_result, base.test_result
            result.best_valid_score, result.train_stats = base.valid_result["score"], base.train_stats
        elif stage == "pretrain":
            pre = pretrain_stage(config, data, Path(config["checkpoint_dir"]) / PRETRAIN_DIR)
            result.checkpoint, result.train_stats = pre.checkpoint, pre.train_stats
            result.files["checkpoint"] = pre.checkpoint
        else:
            _take_finetune(result, finetune_stage(config, data, config["pre_model_path"], run_dir))
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
    the ``baselines`` (default Pop) on the same split, the recommendations export and a few
    explained examples. With ``pre_model_path`` set, pre-training is skipped and that model is
    fine-tuned."""
    if model != "KGGLM":
        return run_kgglm(model, dataset, config_file_list, config_dict, cmd_args=cmd_args, preset=preset)
    config = Config(model, dataset, config_file_list=config_file_list, config_dict=config_dict,
                    cmd_args=cmd_args, preset=preset)
    if config["task"] == "kg_completion":
        return _run_kg_completion(config)
    with _managed_run(config, "run", "pretrain+finetune") as (result, run_dir):
        data = load_dataset_for(config)
        pre_model_path = config["pre_model_path"]  # the config is never rewritten: the stages get what they use
        if str(pre_model_path).strip():  # an existing pretrained model: fine-tune it
            logger.info("pre_model_path is set: skipping pre-training, fine-tuning %s", pre_model_path)
        elif int(config["pretrain_epochs"]) == 0:  # no pre-training at all (the ablation)
            pre_model_path = None
        else:
            pre = pretrain_stage(config, data, run_dir / "pretrain")
            result.files["pretrain_checkpoint"] = pre.checkpoint
            result.train_stats["pretrain"] = pre.train_stats
            pre_model_path = pre.checkpoint
        _take_finetune(result, finetune_stage(config, data, pre_model_path, run_dir))
        for name in config["baselines"]:
            _take_baseline(result, baseline_stage(config, data, name))
    write_run_report(result)
    return result


def _run_kg_completion(config: Config, saved: bool = True) -> RunResult:
    """Knowledge completion in one run directory: pre-train on train-triple walks, zero-shot ("gen-only")
    and fine-tuned ("gen+spec") filtered tail ranking on valid and test."""
    from kgglm.tasks.kg_completion import run_kg_completion

    with _managed_run(config, "kgc", "kg_completion", saved) as (result, run_dir):
        out = run_kg_completion(config, load_dataset_for(config), run_dir=run_dir)
        result.best_valid_result, result.test_result = out["finetuned"]["valid"], out["finetuned"]["test"]
        result.best_valid_score = result.best_valid_result.get("mrr")
        result.baselines["zero-shot"] = {"valid": out["zero_shot"]["valid"], "test": out["zero_shot"]["test"]}
        result.train_stats = {"pretrain": out["pretrain"], "finetune": out["finetune"], "split": out["split"]}
        result.checkpoint = out["finetune"].get("checkpoint")
    write_run_report(result)
    return result


# ---------------------------------------------------------------------------------- helpers
# [distributed] under torchrun (kgglm.distributed) rank 0 alone creates the run directory and writes
# config.yaml, run.log and result.json; the other ranks get its path and write nothing.
@contextlib.contextmanager
def _managed_run(config: Config, dir_stage: str, train_stage: str | None, saved: bool = True
                 ) -> Iterator[tuple[RunResult, Path]]:
    """One run: its directory (``CHECKPOINT_DIR/<model>-<dataset>-<dir_stage>-<time>``), seeding,
    ``config.yaml`` and ``run.log``; the caller fills the yielded result, which is then saved as
    ``result.json``. With ``saved=False`` the directory is removed afterwards."""
    run_dir = _shared_run_dir(config, dir_stage)
    result = RunResult(config.model, config.dataset, train_stage, run_dir=str(run_dir), config=config.to_dict())
    start = time.perf_counter()
    with _run_log(run_dir / "run.log", config["state"]) as log_path:
        _start(config, run_dir, result, log_path)
        yield result, run_dir
        _finish(result, start)
    if not saved:
        if distributed.is_main():  # [distributed] rank 0 owns the run directory
            shutil.rmtree(run_dir, ignore_errors=True)
        result.run_dir, result.files = None, {}


def _shared_run_dir(config: Config, stage: str) -> Path:
    made = str(make_run_dir(config, stage)) if distributed.is_main() else None
    return Path(distributed.broadcast_object(made))


def _run_log(path: Path, level: str):
    if distributed.is_main():
        return log_to_file(path, level)
    return contextlib.nullcontext(path)


def write_run_report(result: RunResult) -> Path | None:
    """``report.html`` and its PNG figures in the run directory (rank 0; none for an unsaved run)."""
    if not result.run_dir or not distributed.is_main():
        return None
    from kgglm.report.html import write_report  # matplotlib: loaded only when a report is written

    path = write_report(result.run_dir)
    result.files["report"] = str(path)
    result.save()
    logger.info("report: %s", path)
    return path


def _take_finetune(result: RunResult, ft: FinetuneResult) -> None:
    result.checkpoint = ft.checkpoint
    result.files["checkpoint"] = ft.checkpoint
    result.files.update(ft.files)
    result.best_valid_score, result.best_valid_result = ft.best_valid_score, ft.best_valid_result
    result.test_result, result.history, result.examples = ft.test_result, ft.history, ft.examples
    result.train_stats.update(ft.train_stats)


def _take_baseline(result: RunResult, base: BaselineResult) -> None:
    result.baselines[base.name] = {"valid": base.valid_result, "test": base.test_result, "train": base.train_stats}


def _start(config: Config, run_dir: Path, result: RunResult, log_path: Path) -> None:
    seed_everything(config["seed"], config["reproducibility"])
    result.files["config"] = str(config.save(run_dir) if distributed.is_main() else run_dir / "config.yaml")
    result.files["log"] = str(log_path)
    logger.info("run directory %s", run_dir)
    logger.info("config (%s; non-default keys): %s", result.files["config"], config.changed())
    logger.debug("resolved config:\n%s", config)


def _finish(result: RunResult, start: float) -> None:
    result.seconds = round(time.perf_counter() - start, 2)
    if result.run_dir and distributed.is_main():
        result.files["result"] = str(Path(result.run_dir) / RESULT_FILE)
        result.save()
    for name, col in result.metrics_table().items():
        logger.info("metrics: %s: %s", name, {k: round(v, 4) if isinstance(v, float) else v for k, v in col.items()})
    logger.info("done in %.1fs; results in %s", result.seconds, result.files.get("result"))
