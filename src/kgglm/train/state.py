"""The dataclasses of a training run: its settings, its progress (evaluations, early stopping), its result.

:class:`TrainProgress` is what a step checkpoint stores besides tensors (weights, optimizer
moments, RNG states); the trainer saves it with ``dataclasses.asdict`` and restores it with
:meth:`TrainProgress.from_dict`, so a resumed run continues with the same counters.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from kgglm.evaluate.stopping import early_stopping

MIXED_PRECISION = ("auto", "bf16", "fp16", "no")
# the two corpora the trainer knows (output slices, checkpoint meta); the config's train_stage takes the same values
TRAIN_STAGES = ("pretrain", "finetune")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training stage. Field names are config keys, documented (with every default)
    in ``configs/overall.yaml``; :func:`kgglm.settings.resolve` builds it. Only the fields that are not
    config keys have defaults here."""

    learning_rate: float
    weight_decay: float
    warmup_steps: int
    clip_grad_norm: float  # 0 disables clipping
    train_batch_size: int
    eval_batch_size: int
    epochs: int  # the stage's epochs: pretrain_epochs or epochs
    save_step: int
    eval_step: int
    stopping_step: int
    seed: int
    typed_output: bool
    show_progress: bool
    resume: bool
    stage: str  # 'pretrain' or 'finetune': picks epochs (pretrain_epochs for pretrain) and the output slices
    # not config keys: the only fields with defaults
    device: str | None = None  # a torch device; None: cuda when available
    mixed_precision: str = "auto"  # auto (bf16, else fp16, on CUDA only) | bf16 | fp16 | no
    max_steps: int | None = None  # stop after this many optimizer steps (benchmarks, smoke runs)
    keep_checkpoints: int = 2  # step checkpoints of this run kept (0 keeps all)
    log_step: int = 10  # the loss is read back from the device only every log_step steps
    # config keys, with defaults only so that callers building a TrainConfig by hand keep working
    micro_batch_size: int = 0  # rows per forward/backward on a rank; 0: a rank's whole share at once
    compile: bool = False  # torch.compile the training forward/backward

    def __post_init__(self) -> None:
        epochs_key = "pretrain_epochs" if self.stage == "pretrain" else "epochs"
        rules = [  # (config key, value, valid?, what it must be)
            ("learning_rate", self.learning_rate, self.learning_rate > 0, "> 0"),
            ("weight_decay", self.weight_decay, self.weight_decay >= 0, ">= 0"),
            ("warmup_steps", self.warmup_steps, self.warmup_steps >= 0, ">= 0"),
            ("clip_grad_norm", self.clip_grad_norm, self.clip_grad_norm >= 0, ">= 0 (0 disables clipping)"),
            ("train_batch_size", self.train_batch_size, self.train_batch_size > 0, "> 0"),
            ("eval_batch_size", self.eval_batch_size, self.eval_batch_size > 0, "> 0"),
            (epochs_key, self.epochs, self.epochs > 0, "> 0"),
            ("save_step", self.save_step, self.save_step > 0, "> 0"),
            ("eval_step", self.eval_step, self.eval_step > 0, "> 0"),
            ("stopping_step", self.stopping_step, self.stopping_step >= 0, ">= 0"),
            ("train_stage", self.stage, self.stage in TRAIN_STAGES, f"one of {TRAIN_STAGES}"),
            ("mixed_precision", self.mixed_precision, self.mixed_precision in MIXED_PRECISION,
             f"one of {MIXED_PRECISION}"),
            ("max_steps", self.max_steps, self.max_steps is None or self.max_steps > 0, "None or > 0"),
            ("keep_checkpoints", self.keep_checkpoints, self.keep_checkpoints >= 0, ">= 0 (0 keeps all)"),
            ("log_step", self.log_step, self.log_step > 0, "> 0"),
            ("micro_batch_size", self.micro_batch_size, self.micro_batch_size >= 0, ">= 0 (0: no accumulation)"),
        ]
        for key, value, ok, requirement in rules:
            if not ok:
                raise ValueError(f"{key} must be {requirement}, got {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def new_run_id() -> str:
    """A name for one training run, unique across runs sharing a checkpoint folder."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class TrainProgress:
    """How far a run got. ``step`` alone fixes the epoch, the batch within it and the LR schedule
    position (the data order of epoch ``e`` is seeded by ``seed + e``)."""

    run_id: str  # written into every checkpoint's meta: a run prunes only its own checkpoints
    step: int = 0
    history: list[dict] = field(default_factory=list)  # one entry per evaluation
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss since the previous entry)
    best_score: float | None = None
    best_metrics: dict | None = None
    bad_evals: int = 0  # evaluations since the last improvement (RecBole's cur_step)
    stopped_early: bool = False
    # the loss summed since the last ``losses`` entry, so that a resumed run logs the same means
    loss_sum: float = 0.0
    loss_count: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainProgress:
        known = {f.name for f in fields(cls)}
        progress = cls(**{k: v for k, v in data.items() if k in known})
        progress.losses = [(int(s), float(v)) for s, v in progress.losses]  # JSON turned tuples into lists
        return progress

    def record_evaluation(self, epoch: int, score: float, metrics: dict[str, float], stopping_step: int) -> bool:
        """Add one evaluation (higher ``score`` is better); return whether it is the new best.

        The rule is :func:`kgglm.evaluate.stopping.early_stopping` (RecBole's): only a strictly
        higher score improves, and training stops after *more than* ``stopping_step`` evaluations
        without improvement.
        """
        improved, self.bad_evals, self.stopped_early = early_stopping(score, self.best_score, self.bad_evals,
                                                                      stopping_step)
        self.history.append({"epoch": epoch, "step": self.step, "score": score, "metrics": metrics,
                             "best": improved})
        if improved:
            self.best_score, self.best_metrics = score, metrics
        return improved


@dataclass
class TrainResult:
    """What :func:`kgglm.train.trainer.train` returns."""

    step: int
    epochs_completed: int
    last_loss: float
    losses: list[tuple[int, float]] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    best_score: float | None = None
    best_metrics: dict | None = None
    best_checkpoint: Path | None = None  # checkpoint_dir/best, when there were evaluations
    last_checkpoint: Path | None = None  # this run's newest step checkpoint (it exists)
    stopped_early: bool = False
    paths_per_second: float = 0.0
    tokens_per_second: float = 0.0
    run_id: str = ""
