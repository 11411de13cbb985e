"""A run: one run directory, the task's recipe, one ``result.json``; the one dispatch of task, model and stage.

:func:`plan` reads the resolved config once and decides what a call runs (a :class:`Job`):
knowledge completion, a baseline, one KGGLM stage, or the whole pipeline. :func:`execute` makes the
run directory (``CHECKPOINT_DIR/<model>-<dataset>-<job.dir_stage>-<time>/``: ``config.yaml``,
``run.log``, ``result.json``, ``report.html`` for whole jobs), seeds, loads the dataset, calls the
task's recipe (:func:`kgglm.tasks.recommendation.run_recommendation`,
:func:`kgglm.tasks.kg_completion.run_kg_completion`) and assembles its typed result into the
:class:`RunResult`. The surface (:mod:`kgglm.quick_start`, :mod:`kgglm.cli`, :mod:`kgglm.tune`) only
builds the config and calls :func:`run_task`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kgglm import distributed, durable
from kgglm.config import Config, ConfigError
from kgglm.logging_utils import log_to_file
from kgglm.report.saved import RESULT_FILE  # the name the report, trackers and server read
from kgglm.runs import make_run_dir, seed_everything
from kgglm.settings import resolve
from kgglm.tasks.recommendation import (
    PRETRAIN_DIR,
    BaselineResult,
    FinetuneResult,
    RecommendationResult,
    load_dataset_for,
    run_recommendation,
)

if TYPE_CHECKING:
    from kgglm.tasks.kg_completion import KGCompletionResult

__all__ = ["RESULT_FILE", "Job", "RunResult", "execute", "plan", "run_task", "write_run_report"]

logger = logging.getLogger(__name__)

KG_COMPLETION = "kg_completion"  # kgglm.tasks.kg_completion.TASK, loaded only when run (it imports pandas)


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


# ---------------------------------------------------------------------------------- the dispatch
@dataclass(frozen=True)
class Job:
    """What one call runs: ``task`` (``recommendation`` or ``kg_completion``) and its ``stage``
    (:data:`kgglm.tasks.recommendation.RECOMMENDATION_STAGES`, or ``kg_completion``), the run
    directory's stage name, result.json's ``train_stage``, and whether a report is written."""

    task: str
    stage: str
    dir_stage: str
    train_stage: str | None
    report: bool


def plan(config: Config, *, pipeline: bool) -> Job:
    """The job of ``config``: ``pipeline`` is ``kgglm run`` (the whole job), otherwise ``kgglm train``
    (one stage, ``train_stage``). A baseline model is fitted and evaluated either way."""
    if config["task"] == KG_COMPLETION:
        if config.model != "KGGLM":
            raise ConfigError(f"task kg_completion runs KGGLM (its KGE baselines: benchmarks/bench_kg_completion.py), "
                              f"not {config.model}")
        return Job(KG_COMPLETION, KG_COMPLETION, "kgc", KG_COMPLETION, report=True)
    if config.model != "KGGLM":
        return Job("recommendation", "baseline", "eval", None, report=False)
    if pipeline:  # the stages it runs: no pre-training with pretrain_epochs 0 or a given pre_model_path
        pretrains = int(config["pretrain_epochs"]) > 0 and not str(config["pre_model_path"]).strip()
        return Job("recommendation", "pipeline", "run", "pretrain+finetune" if pretrains else "finetune", report=True)
    stage = config["train_stage"]
    if stage == "finetune" and not str(config["pre_model_path"]).strip():
        raise ConfigError("train_stage 'finetune' needs pre_model_path: the pretrain checkpoint directory, "
                          f"e.g. {Path(config['checkpoint_dir']) / PRETRAIN_DIR}/")
    return Job("recommendation", stage, stage, stage, report=False)


def run_task(config: Config, *, pipeline: bool, saved: bool = True) -> RunResult:
    """:func:`execute` the :func:`plan` of ``config``."""
    return execute(config, plan(config, pipeline=pipeline), saved=saved)


def execute(config: Config, job: Job, *, saved: bool = True) -> RunResult:
    """Run ``job`` in a fresh run directory; with ``saved=False`` the directory (checkpoints
    included) is removed afterwards and the result carries only the metrics. The config is resolved
    here, once (:func:`kgglm.settings.resolve`); the recipes get its sections."""
    settings = resolve(config)
    with _managed_run(config, job.dir_stage, job.train_stage, saved) as (result, run_dir):
        data = load_dataset_for(settings)
        if job.task == KG_COMPLETION:
            from kgglm.tasks.kg_completion import run_kg_completion

            _take_kg_completion(result, run_kg_completion(settings, data, run_dir=run_dir))
        else:
            _take_recommendation(result, run_recommendation(settings, data, run_dir, job.stage))
    if job.report:
        write_run_report(result)
    return result


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


# ---------------------------------------------------------------------------------- assembly
def _take_recommendation(result: RunResult, out: RecommendationResult) -> None:
    if out.baseline is not None:  # the run's own model is a baseline
        base = out.baseline
        result.best_valid_result, result.test_result = base.valid_result, base.test_result
        result.best_valid_score, result.train_stats = base.valid_result["score"], base.train_stats
    if out.pretrain is not None and out.finetune is None:  # pre-training was the job
        result.checkpoint, result.train_stats = out.pretrain.checkpoint, out.pretrain.train_stats
        result.files["checkpoint"] = out.pretrain.checkpoint
    elif out.pretrain is not None:
        result.files["pretrain_checkpoint"] = out.pretrain.checkpoint
        result.train_stats["pretrain"] = out.pretrain.train_stats
    if out.finetune is not None:
        _take_finetune(result, out.finetune)
    for base in out.baselines:
        _take_baseline(result, base)


def _take_kg_completion(result: RunResult, out: KGCompletionResult) -> None:
    result.best_valid_result, result.test_result = out.finetuned["valid"], out.finetuned["test"]
    result.best_valid_score = result.best_valid_result.get("mrr")
    result.baselines["zero-shot"] = {"valid": out.zero_shot["valid"], "test": out.zero_shot["test"]}
    result.train_stats = {"pretrain": out.pretrain, "finetune": out.finetune, "split": out.split}
    result.checkpoint = out.checkpoint


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
