"""One training loop for both stages (pretrain on KG walks, fine-tune on user paths), nanoGPT-like.

AdamW with decoupled weight decay (not on biases / LayerNorm), linear warmup then linear decay to
0, gradient clipping, autocast (bf16, else fp16 with a grad scaler) on CUDA only. The data order
of epoch ``e`` is a permutation seeded by ``seed + e``, so a resumed run skips exactly the batches
it already consumed and then sees the same batches as an uninterrupted run.

The whole state of a run is :meth:`Trainer.state_dict` (nanoGPT's checkpoint dict): it is what a
step checkpoint holds and what :meth:`Trainer.load_state_dict` restores on ``resume``.
Checkpoints go to ``checkpoint_dir/step-XXXXXXX`` every ``save_step`` steps and at the end (the
run's newest ``keep_checkpoints`` are kept) and, when evaluating, the best one to ``checkpoint_dir/best``.

Data parallel (``torchrun``, see :mod:`kgglm.distributed`): the model is wrapped in
DistributedDataParallel; every rank holds the same corpus (sampled from the shared seed) and the
same global batches (the seeded permutation above), and trains on its contiguous share of each
batch, so every path is seen once per epoch across ranks and ``train_batch_size`` is the *global*
batch whatever the number of processes (per-rank rows = train_batch_size / N). Each share's loss
is weighted by its share of the batch's rows, so DDP's gradient average equals the gradient of the
batch mean (exactly when rows have equal lengths, as the paths of one hop count do; otherwise a
row-weighted mean of per-share token means). ``micro_batch_size`` > 0 splits a rank's share
further and accumulates gradients (synchronising only on the last micro-batch), for batches that
do not fit in memory. Rank 0 alone
writes checkpoints; the run id, the checkpoint to resume and the evaluation results come from it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from kgglm import distributed, durable
from kgglm.distributed import resolve_device
from kgglm.model.gpt import IGNORE_INDEX, KGGLM, next_token_labels
from kgglm.paths.vocab import PAD, Vocabulary
from kgglm.train import checkpoint as ckpt
from kgglm.train.state import TrainConfig, TrainProgress, TrainResult, new_run_id

logger = logging.getLogger(__name__)

EvaluateFn = Callable[[KGGLM], "tuple[float, dict]"]
# a training loss other than next-token cross-entropy: (model, batch rows) -> scalar mean over the rows
Objective = Callable[[KGGLM, torch.Tensor], torch.Tensor]

__all__ = ["Objective", "TrainConfig", "TrainResult", "Trainer", "lr_at", "resolve_device", "train", "validation_loss"]


def lr_at(step: int, config: TrainConfig, total_steps: int) -> float:
    """Linear warmup over ``warmup_steps`` to ``learning_rate``, then linear decay to 0 at ``total_steps``."""
    warm = config.warmup_steps
    if warm > 0 and step < warm:
        return config.learning_rate * (step + 1) / warm
    remaining = max(total_steps - step, 0) / max(total_steps - warm, 1)
    return config.learning_rate * min(remaining, 1.0)


def make_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; matrices (incl. embeddings) decay, biases and LayerNorm weights (1-D) do not. Frozen
    parameters (the history expert outside its own fit, :mod:`kgglm.train.expert`) are left out."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    extra = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.999), eps=1e-8, **extra)


def autocast_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """auto: bf16 (else fp16) on CUDA, full precision on CPU; 'bf16' also enables CPU autocast."""
    if mode == "no":
        return None
    if device.type != "cuda":
        return torch.bfloat16 if (mode == "bf16" and device.type == "cpu") else None
    if mode == "fp16" or not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


@torch.no_grad()
def validation_loss(model: KGGLM, tokens, *, batch_size: int, device: torch.device | None = None,
                    output_slices: torch.Tensor | None = None) -> float:
    """Mean next-token cross-entropy over all non-PAD targets of ``tokens`` (see ``KGGLM.loss``)."""
    device = device or model.wte.weight.device
    tokens = _as_tokens(tokens, "valid_tokens", model.config.n_positions, model.config.vocab_size)
    was_training = model.training
    model.eval()
    total, count = torch.zeros((), device=device), 0
    for start in range(0, tokens.shape[0], batch_size):
        x = tokens[start:start + batch_size].to(device)
        labels = next_token_labels(x, PAD)
        n = int((labels != IGNORE_INDEX).sum())
        total += model.loss(x, labels, output_slices).float() * n
        count += n
    model.train(was_training)
    return float(total) / max(count, 1)


class _LossOf(torch.nn.Module):
    """``model.loss`` (or ``objective(model, x)``) as the ``forward`` of a module: DDP synchronises
    gradients through hooks that its ``forward`` installs, so the loss must be computed by calling
    the wrapped module."""

    def __init__(self, model: KGGLM, slices: torch.Tensor | None, objective: Objective | None = None) -> None:
        super().__init__()
        self.model, self.slices, self.objective = model, slices, objective

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.objective is not None:
            return self.objective(self.model, x)
        return self.model.loss(x, next_token_labels(x, PAD), self.slices)


class Trainer:
    """Trains ``model`` on ``tokens [P, T]`` (``[BOS] ... [EOS] [PAD]*``) and checkpoints it.

    Every ``eval_step`` epochs the model is evaluated with ``evaluate_fn(model) -> (score, metrics)``
    (higher is better) or, without it, by the loss on ``valid_tokens`` (lower is better), and
    training stops early as RecBole does (see :meth:`TrainProgress.record_evaluation`). With
    neither there is no evaluation (pre-training). With ``config.resume`` it continues from the
    newest resumable checkpoint in ``checkpoint_dir`` (same corpus and batch size required).

    The loss is the next-token cross-entropy of the rows (typed by ``config.typed_output``) unless
    ``objective(model, rows) -> loss`` is given: a task's own loss over the same seeded batches of
    corpus rows (e.g. knowledge completion's 1-N loss, rows = prompts). It must be a mean over rows,
    so that the row weighting of data-parallel shares and micro-batches stays right.
    """

    def __init__(self, model: KGGLM, tokens, config: TrainConfig, *, checkpoint_dir: str | os.PathLike,
                 vocab: Vocabulary, extra_meta: dict | None = None, evaluate_fn: EvaluateFn | None = None,
                 valid_tokens=None, objective: Objective | None = None) -> None:
        self.config, self.vocab, self.extra_meta = config, vocab, dict(extra_meta or {})
        self.device = distributed.device_for_rank(resolve_device(config.device))
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.model = model.to(self.device)
        self.checkpoint_dir = Path(checkpoint_dir)
        self.evaluate_fn, self.valid_tokens = evaluate_fn, valid_tokens
        data = _as_tokens(tokens, "tokens", model.config.n_positions, model.config.vocab_size)
        self.fingerprint = hashlib.sha1(data.numpy().tobytes()).hexdigest()
        # the corpus lives on the device (a few MB even for ml-1m): batches are then gathered there
        # with no host-to-device copy per step; the one copy is from pinned memory, asynchronous
        self.data = (data.pin_memory() if self.device.type == "cuda" else data).to(self.device, non_blocking=True)
        # the batches are cut from the corpus by index: every rank must have sampled the same one
        distributed.check_same(self.fingerprint, "the training corpus (path sampling must be deterministic)")
        self.steps_per_epoch = math.ceil(self.data.shape[0] / config.train_batch_size)
        self.total_steps = min(config.epochs * self.steps_per_epoch, config.max_steps or math.inf)
        self.slices = None
        if config.typed_output and objective is None:
            self.slices = torch.as_tensor(vocab.output_slices(self.data.shape[1], config.stage), device=self.device)
            _check_slices(self.data, self.slices, config.stage)
        self.optimizer = make_optimizer(model, config, self.device)
        self.ddp: torch.nn.parallel.DistributedDataParallel | None = None
        self.loss_fn: torch.nn.Module = _LossOf(self.model, self.slices, objective)
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = torch.nn.parallel.DistributedDataParallel(self.loss_fn, device_ids=ids)
            self.loss_fn = self.ddp
        if config.compile:
            self.loss_fn = torch.compile(self.loss_fn)
        amp = autocast_dtype(config.mixed_precision, self.device)
        self.amp_dtype: torch.dtype | None = amp  # the autocast dtype of the training step (None: full precision)
        self.autocast = partial(torch.autocast, self.device.type, dtype=amp) if amp else nullcontext
        self.scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
        self.progress = TrainProgress(run_id=distributed.broadcast_object(new_run_id()))
        self.last_checkpoint: Path | None = None
        self.bar: tqdm | None = None  # the progress bar of fit()
        self._loss_sum = torch.zeros((), device=self.device)  # summed on the device: no sync per step
        self._paths_done, self._overhead = 0, 0.0  # throughput of this call, evaluation and saving excluded

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly (tensors and plain values only)."""
        self.progress.loss_sum = float(self._loss_sum)
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "rng": {"cpu": torch.get_rng_state()}, "progress": asdict(self.progress),
                 "corpus": {"fingerprint": self.fingerprint, "train_batch_size": self.config.train_batch_size,
                            "total_steps": self.total_steps}}
        if self.device.type == "cuda":
            state["rng"]["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.world > 1:  # dropout differs per rank: keep every rank's generators (a collective)
            state["rng"]["per_rank"] = distributed.all_gather_object(dict(state["rng"]))
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        corpus = state["corpus"]
        if corpus["fingerprint"] != self.fingerprint or corpus["train_batch_size"] != self.config.train_batch_size:
            raise ckpt.CheckpointError(f"cannot resume: the checkpoint was trained on a different corpus or "
                                       f"train_batch_size ({corpus['train_batch_size']} vs "
                                       f"{self.config.train_batch_size})")
        if corpus["total_steps"] != self.total_steps:  # e.g. more epochs: the LR schedule changes from here
            logger.warning("resuming a run planned for %d steps as a run of %d", corpus["total_steps"],
                           self.total_steps)
        ckpt.apply_weights(self.model, state["model"], "model weights")
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        rng = state["rng"]
        per_rank = rng.get("per_rank") or [rng]
        if len(per_rank) == self.world:
            rng = per_rank[self.rank]
        elif self.world > 1:  # another number of processes: fresh, distinct streams per rank
            logger.warning("resuming a %d-process run with %d processes: reseeding dropout", len(per_rank), self.world)
            seed = self.config.seed + self.rank + 7919 * int(state["progress"]["step"])
            rng = {"cpu": torch.Generator().manual_seed(seed).get_state()}
        torch.set_rng_state(rng["cpu"])
        if self.device.type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.progress = TrainProgress.from_dict(state["progress"])
        self._loss_sum.fill_(self.progress.loss_sum)

    def save(self, name: str, resumable: bool = True) -> Path:
        """Write ``checkpoint_dir/name``: the weights, plus the rest of the state when ``resumable``.

        Called on every rank (the state gathers every rank's RNG); rank 0 alone writes, and the
        others wait until the checkpoint is complete, so none can read a missing one."""
        p = self.progress
        state = None
        if resumable:
            state = self.state_dict()
            del state["model"]  # the weights go to model.safetensors
        meta = {**self.extra_meta, "stage": self.config.stage, "step": p.step, "run_id": p.run_id,
                "epoch": p.step / self.steps_per_epoch, "world_size": self.world}
        path = self.checkpoint_dir / name
        if distributed.is_main():
            ckpt.save_checkpoint(path, self.model, self.vocab, train_config=self.config.to_dict(), meta=meta,
                                 training_state=state, tag=p.run_id)
        distributed.barrier()
        return path

    def resume(self) -> bool:
        """Restore the newest resumable checkpoint of ``checkpoint_dir``; False when there is none."""
        # rank 0 chooses, so that every rank loads the same state
        where = distributed.broadcast_object(ckpt.newest_checkpoint(self.checkpoint_dir, require_state=True))
        if where is None:
            logger.warning("resume requested but no resumable checkpoint in %s; starting fresh", self.checkpoint_dir)
            return False
        state = ckpt.load_training_state(where, ckpt.STATE_FIELDS)
        state["model"] = ckpt.read_weights(where)
        try:
            self.load_state_dict(state)
        except ckpt.CheckpointError as e:
            raise ckpt.CheckpointError(f"{where}: {e}") from None
        self.last_checkpoint = where  # the answer when nothing is left to train
        self._remove_leftovers()
        logger.info("resuming run %s from %s at step %d", self.progress.run_id, where, self.progress.step)
        return True

    # ------------------------------------------------------------------ training
    @property
    def done(self) -> bool:
        return self.progress.step >= self.total_steps or self.progress.stopped_early

    def fit(self) -> TrainResult:
        """Train until ``epochs`` (or ``max_steps``) are done or early stopping; return the result."""
        if not (self.config.resume and self.resume()):
            # a stream per rank (nanoGPT's seed offset): ranks must not draw the same dropout masks
            torch.manual_seed(self.config.seed + self.rank)
            if self.device.type == "cuda":
                torch.cuda.manual_seed(self.config.seed + self.rank)
        self.model.train()
        bs, t_start = self.config.train_batch_size, time.perf_counter()
        show = self.config.show_progress and distributed.is_main()
        self.bar = tqdm(total=self.total_steps, initial=self.progress.step, disable=not show,
                        desc=self.config.stage, dynamic_ncols=True)
        with self.bar:
            while not self.done:
                epoch, first = divmod(self.progress.step, self.steps_per_epoch)
                batches = distributed.epoch_batches(self.data.shape[0], bs, epoch, self.config.seed)
                for b in range(first, self.steps_per_epoch):
                    rows = self.rank_rows(batches[b])
                    self.train_step(self.data[rows.to(self.device, non_blocking=True)], global_rows=len(batches[b]))
                    self._after_step(epoch, end_of_epoch=b == self.steps_per_epoch - 1)
                    if self.done:
                        break
        self._prune()  # also what an interruption between a save and its pruning left behind
        distributed.barrier()  # every rank leaves with rank 0's files complete (best/ is read next)
        return self._result(time.perf_counter() - t_start - self._overhead)

    def rank_rows(self, batch: torch.Tensor) -> torch.Tensor:
        """The corpus rows of global ``batch`` that this rank trains on (all of them in one process)."""
        return distributed.rank_rows(batch, self.rank, self.world)

    def train_step(self, x: torch.Tensor, global_rows: int | None = None) -> None:
        """One optimizer step on ``x`` at the schedule position ``progress.step``.

        ``x`` is this rank's share of a global batch of ``global_rows`` rows (default: ``x`` is the
        whole batch). Each micro-batch's mean loss is weighted by its share of the global rows
        (times the world size, which DDP's average divides out), so the step follows the gradient
        of the batch mean whatever the number of processes and micro-batches.
        """
        lr = lr_at(self.progress.step, self.config, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        global_rows = global_rows or x.shape[0] * self.world
        micro = distributed.split_micro(x, self.config.micro_batch_size)
        if x.shape[0] == 0:  # a short last batch left this rank nothing: join DDP's all-reduce with weight 0
            micro = [self.data[:1]]
        step_loss = torch.zeros((), device=self.device)
        for i, m in enumerate(micro):
            weight = m.shape[0] * self.world / global_rows if x.shape[0] else 0.0
            sync = self.ddp is None or i == len(micro) - 1  # all-reduce once, on the last micro-batch
            with (nullcontext() if sync else self.ddp.no_sync()), self.autocast():
                loss = self.loss_fn(m)
            scaled = loss if weight == 1.0 else loss * weight
            if self.scaler is not None:
                self.scaler.scale(scaled).backward()
            else:
                scaled.backward()
            step_loss += loss.detach().float() * (m.shape[0] / x.shape[0] if x.shape[0] else 0.0)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients
        if self.config.clip_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.progress.step += 1
        self.progress.loss_count += 1
        self._loss_sum += step_loss  # this rank's rows; averaged over ranks when logged
        self._paths_done += global_rows  # throughput of the whole job

    def _after_step(self, epoch: int, end_of_epoch: bool) -> None:
        """Log, evaluate, checkpoint: whatever is due after the step just taken."""
        step, config = self.progress.step, self.config
        self.bar.update(1)
        if step % config.log_step == 0 or step == self.total_steps or end_of_epoch:
            self._log_loss()
        if end_of_epoch and self._evaluates and (epoch + 1) % config.eval_step == 0:
            self._timed(self.evaluate, epoch + 1)
        if step % config.save_step == 0 or self.done:
            self.last_checkpoint = self._timed(self.save, f"step-{step:07d}")
            self._prune()

    def _log_loss(self) -> None:
        p = self.progress
        # the only host sync of the training loop (and, with N processes, its only extra all-reduce)
        mean = float(distributed.all_reduce_mean(self._loss_sum.clone())) / p.loss_count
        p.losses.append((p.step, mean))
        self._loss_sum.zero_()
        p.loss_count = 0
        self.bar.set_postfix(loss=f"{mean:.4f}", lr=f"{lr_at(p.step - 1, self.config, self.total_steps):.2e}")

    # ------------------------------------------------------------------ evaluation
    @property
    def _evaluates(self) -> bool:
        return self.evaluate_fn is not None or self.valid_tokens is not None

    def evaluate(self, epoch: int) -> None:
        """Evaluate after ``epoch`` epochs, save ``best/`` on improvement, decide early stopping."""
        self.model.eval()
        with torch.no_grad():
            if self.evaluate_fn is not None:
                score, metrics = self.evaluate_fn(self.model)
            else:
                loss = validation_loss(self.model, self.valid_tokens, batch_size=self.config.eval_batch_size,
                                       device=self.device, output_slices=self.slices)
                score, metrics = -loss, {"valid_loss": loss}
        self.model.train()
        metrics = {str(k): float(v) for k, v in metrics.items()}  # plain floats: JSON in the checkpoint
        # rank 0's numbers decide (they are the same everywhere: metrics come from gathered lists)
        score, metrics = distributed.broadcast_object((float(score), metrics))
        improved = self.progress.record_evaluation(epoch, float(score), metrics, self.config.stopping_step)
        if improved:
            self.save("best", resumable=False)
        logger.info("epoch %d step %d: %s%s", epoch, self.progress.step, metrics, " (best)" if improved else "")

    # ------------------------------------------------------------------ bookkeeping
    def _timed(self, fn: Callable, *args) -> Any:
        """``fn(*args)``, its time excluded from the throughput figures."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # charge queued training work to training, not to saving
        t0 = time.perf_counter()
        out = fn(*args)
        self._overhead += time.perf_counter() - t0
        return out

    def _remove_leftovers(self) -> None:
        """Remove the temporary folders of this run's interrupted saves (``.step-*.tmp-RUN-*``,
        ``.best.tmp-RUN-*``); other runs sharing the folder may be saving into theirs."""
        if distributed.is_main():
            for path in durable.remove_leftovers(self.checkpoint_dir, f".*.tmp-{self.progress.run_id}-*"):
                logger.info("removed %s, left by an interrupted save", path)

    def _prune(self) -> None:
        """Remove this run's step checkpoints but the newest ``keep_checkpoints``.

        Only this run's (by ``meta.run_id``): runs share ``KGGLM-pretrain/``, and another run's
        checkpoints are not this one's to delete. ``best/`` is never removed."""
        if self.config.keep_checkpoints <= 0 or not distributed.is_main():
            return
        mine = []
        for path in self.checkpoint_dir.glob("step-*"):
            try:
                meta = ckpt.read_info(path)["meta"] if ckpt.is_checkpoint(path) else {}
            except ckpt.CheckpointError:
                continue  # unreadable: not provably ours
            if meta.get("run_id") == self.progress.run_id:
                mine.append((int(meta.get("step", 0)), path))
        for _, old in sorted(mine)[:-self.config.keep_checkpoints]:
            if old != self.last_checkpoint:
                shutil.rmtree(old, ignore_errors=True)

    def _result(self, elapsed: float) -> TrainResult:
        p, best = self.progress, self.checkpoint_dir / "best"
        return TrainResult(
            step=p.step, epochs_completed=p.step // self.steps_per_epoch,
            last_loss=p.losses[-1][1] if p.losses else float("nan"), losses=list(p.losses),
            history=list(p.history), best_score=p.best_score, best_metrics=p.best_metrics,
            best_checkpoint=best if self._evaluates and best.exists() else None,
            last_checkpoint=self.last_checkpoint, stopped_early=p.stopped_early, run_id=p.run_id,
            paths_per_second=self._paths_done / elapsed if elapsed > 0 else 0.0,
            tokens_per_second=self._paths_done * self.data.shape[1] / elapsed if elapsed > 0 else 0.0)


def train(model: KGGLM, tokens, config: TrainConfig, *, checkpoint_dir: str | os.PathLike, vocab: Vocabulary,
          extra_meta: dict | None = None, evaluate_fn: EvaluateFn | None = None, valid_tokens=None,
          objective: Objective | None = None) -> TrainResult:
    """Train ``model`` on ``tokens`` with ``config`` (see :class:`Trainer`) and return the result."""
    return Trainer(model, tokens, config, checkpoint_dir=checkpoint_dir, vocab=vocab, extra_meta=extra_meta,
                   evaluate_fn=evaluate_fn, valid_tokens=valid_tokens, objective=objective).fit()


def _as_tokens(tokens, name: str, n_positions: int, vocab_size: int) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(tokens) if not torch.is_tensor(tokens) else tokens, dtype=torch.long)
    if t.dim() != 2 or t.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty [paths, length] token array, got shape {tuple(t.shape)}")
    if t.shape[1] > n_positions:
        raise ValueError(f"{name} rows have {t.shape[1]} tokens but the model's n_positions is {n_positions}")
    if t.min() < 0 or t.max() >= vocab_size:
        raise ValueError(f"{name} has token ids outside [0, {vocab_size}) (built with another vocabulary?)")
    return t


def _check_slices(data: torch.Tensor, slices: torch.Tensor, stage: str) -> None:
    """Every target token must lie in the range its position normalises over (typed_output)."""
    labels = data[:, 1:]
    lo, hi = slices[:, 0], slices[:, 1]
    bad = (labels != PAD) & ((labels < lo) | (labels >= hi))
    if bool(bad.any()):
        row, pos = (int(i) for i in torch.nonzero(bad)[0])
        raise ValueError(f"typed_output: path {row} has token {int(labels[row, pos])} at position {pos + 1}, "
                         f"outside the range [{int(lo[pos])}, {int(hi[pos])}) that the {stage!r} path grammar "
                         f"allows there; set typed_output: false for corpora of another shape")
