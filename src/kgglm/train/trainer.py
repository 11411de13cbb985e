"""One training loop for both stages (pretrain on KG walks, fine-tune on user paths), nanoGPT-like.

AdamW with decoupled weight decay (not on biases / LayerNorm), linear warmup then linear decay to
0, gradient clipping, autocast (bf16, else fp16 with a grad scaler) on CUDA only. The data order
of epoch ``e`` is a permutation seeded by ``seed + e``, so a resumed run skips exactly the batches
it already consumed and then sees the same batches as an uninterrupted run.

Checkpoints go to ``checkpoint_dir/step-XXXXXXX`` every ``save_step`` steps and at the end (the
newest ``keep_checkpoints`` are kept) and, when evaluating, the best one to ``checkpoint_dir/best``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from kgglm.model.gpt import IGNORE_INDEX, KGGLM, next_token_labels
from kgglm.paths.vocab import PAD, Vocabulary
from kgglm.train import checkpoint as ckpt

logger = logging.getLogger(__name__)

EvaluateFn = Callable[[KGGLM], "tuple[float, dict]"]


@dataclass
class TrainConfig:
    """Training hyper-parameters (hopwise/RecBole key names where they exist)."""

    learning_rate: float = 2e-4
    weight_decay: float = 0.01
    warmup_steps: int = 250
    max_grad_norm: float = 1.0
    train_batch_size: int = 256
    eval_batch_size: int = 256
    epochs: int = 1
    max_steps: int | None = None  # stop after this many optimizer steps (benchmarks, smoke runs)
    save_step: int = 50
    keep_checkpoints: int = 2
    log_step: int = 10  # loss is read back from the device only every log_step steps
    seed: int = 2024
    device: str = "auto"  # auto -> cuda if available
    mixed_precision: str = "auto"  # auto | bf16 | fp16 | no   (auto: autocast on CUDA only)
    show_progress: bool = True
    stage: str = "pretrain"
    typed_output: bool = True  # softmax over the token kind the path grammar allows (Vocabulary.output_slices)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    step: int
    epochs_completed: int
    last_loss: float
    losses: list = field(default_factory=list)  # (step, mean loss since the previous log)
    history: list = field(default_factory=list)  # one dict per evaluation
    best_score: float | None = None
    best_metrics: dict | None = None
    best_checkpoint: Path | None = None
    last_checkpoint: Path | None = None
    stopped_early: bool = False
    paths_per_second: float = 0.0
    tokens_per_second: float = 0.0


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def lr_at(step: int, config: TrainConfig, total_steps: int) -> float:
    """Linear warmup over ``warmup_steps`` to ``learning_rate``, then linear decay to 0 at ``total_steps``."""
    warm = config.warmup_steps
    if warm > 0 and step < warm:
        return config.learning_rate * (step + 1) / warm
    remaining = max(total_steps - step, 0) / max(total_steps - warm, 1)
    return config.learning_rate * min(remaining, 1.0)


def make_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; matrices (incl. embeddings) decay, biases and LayerNorm weights (1-D) do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    extra = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.999), eps=1e-8, **extra)


def _autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """auto: bf16 (else fp16) on CUDA, full precision on CPU; 'bf16' also enables CPU autocast."""
    mode = config.mixed_precision
    if mode not in ("auto", "bf16", "fp16", "no"):
        raise ValueError(f"mixed_precision must be auto, bf16, fp16 or no, got {mode!r}")
    if mode == "no":
        return None
    if device.type != "cuda":
        return torch.bfloat16 if (mode == "bf16" and device.type == "cpu") else None
    if mode == "fp16" or not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def _fingerprint(tokens: torch.Tensor) -> str:
    return hashlib.sha1(tokens.cpu().numpy().tobytes()).hexdigest()


def _as_tokens(tokens, name: str, n_positions: int, vocab_size: int) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(tokens) if not torch.is_tensor(tokens) else tokens, dtype=torch.long)
    if t.dim() != 2 or t.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty [paths, length] token array, got shape {tuple(t.shape)}")
    if t.shape[1] > n_positions:
        raise ValueError(f"{name} rows have {t.shape[1]} tokens but the model's n_positions is {n_positions}")
    if t.min() < 0 or t.max() >= vocab_size:
        raise ValueError(f"{name} has token ids outside [0, {vocab_size}) (built with another vocabulary?)")
    return t


@torch.no_grad()
def validation_loss(model: KGGLM, tokens, batch_size: int = 256, device: torch.device | None = None,
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


def train(model: KGGLM, tokens, config: TrainConfig, *, checkpoint_dir: str | os.PathLike, vocab: Vocabulary,
          extra_meta: dict | None = None, evaluate_fn: EvaluateFn | None = None, eval_step: int = 1,
          stopping_step: int = 10, valid_tokens=None, resume: bool = False) -> TrainResult:
    """Train ``model`` on ``tokens [P, T]`` (``[BOS] ... [EOS] [PAD]*``) and checkpoint it.

    Every ``eval_step`` epochs the model is evaluated with ``evaluate_fn(model) -> (score, metrics)``
    (higher is better) or, without it, by the loss on ``valid_tokens`` (lower is better); after
    ``stopping_step`` evaluations without improvement training stops. With neither, there is no
    evaluation (pre-training). ``resume`` continues from the newest resumable checkpoint in
    ``checkpoint_dir`` (same corpus and batch size required).
    """
    device = resolve_device(config.device)
    model.to(device)
    checkpoint_dir = Path(checkpoint_dir)
    data = _as_tokens(tokens, "tokens", model.config.n_positions, model.config.vocab_size).to(device)
    n_paths, seq_len = data.shape
    bs = config.train_batch_size
    steps_per_epoch = math.ceil(n_paths / bs)
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    do_eval = evaluate_fn is not None or valid_tokens is not None
    fingerprint = _fingerprint(data)
    slices = None
    if config.typed_output:
        slices = torch.as_tensor(vocab.output_slices(seq_len, config.stage), device=device)
        _check_slices(data, slices, config.stage)

    optimizer = make_optimizer(model, config, device)
    amp_dtype = _autocast_dtype(config, device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else nullcontext

    step, history, losses, stopped_early = 0, [], [], False
    best_score, best_metrics, bad_evals = None, None, 0
    best_path = checkpoint_dir / "best"
    if resume and _has_resumable(checkpoint_dir):
        state_dir = ckpt.resolve_checkpoint(checkpoint_dir, require_state=True)
        state = ckpt.load_training_state(state_dir)
        if state["fingerprint"] != fingerprint or state["train_batch_size"] != bs:
            raise ckpt.CheckpointError(f"{state_dir}: cannot resume, it was trained on a different corpus or "
                                       f"train_batch_size ({state['train_batch_size']} vs {bs})")
        ckpt.load_weights(model, state_dir)
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng_cpu"])
        if device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"], device)
        step, history, losses = int(state["step"]), list(state["history"]), list(state["losses"])
        best_score, bad_evals = state["best_score"], int(state["bad_evals"])
        best_metrics = history[state["best_index"]]["metrics"] if state["best_index"] >= 0 else None
        stopped_early = bool(state.get("stopped_early", False))  # an early-stopped run stays stopped
        logger.info("resuming from %s at step %d", state_dir, step)
    else:
        if resume:
            logger.warning("resume requested but no resumable checkpoint in %s; starting fresh", checkpoint_dir)
        torch.manual_seed(config.seed)
        if device.type == "cuda":
            torch.cuda.manual_seed_all(config.seed)

    def save(path: Path, with_state: bool) -> Path:
        meta = {"stage": config.stage, "step": step, "epoch": step / steps_per_epoch, **(extra_meta or {})}
        state = None
        if with_state:
            best_index = max((i for i, h in enumerate(history) if h.get("best")), default=-1)
            state = {"step": step, "optimizer": optimizer.state_dict(), "rng_cpu": torch.get_rng_state(),
                     "history": history, "losses": losses, "best_score": best_score, "bad_evals": bad_evals,
                     "best_index": best_index, "fingerprint": fingerprint, "train_batch_size": bs,
                     "stopped_early": stopped_early}
            if device.type == "cuda":
                state["rng_cuda"] = torch.cuda.get_rng_state(device)
            if scaler is not None:
                state["scaler"] = scaler.state_dict()
        return ckpt.save_checkpoint(path, model, vocab, train_config=config.to_dict(), meta=meta,
                                    training_state=state)

    def evaluate(epoch: int) -> bool:
        """Evaluate after ``epoch`` epochs; return True when training should stop early."""
        nonlocal best_score, best_metrics, bad_evals
        model.eval()
        with torch.no_grad():
            if evaluate_fn is not None:
                score, metrics = evaluate_fn(model)
            else:
                vloss = validation_loss(model, valid_tokens, config.eval_batch_size, device, slices)
                score, metrics = -vloss, {"valid_loss": vloss}
        model.train()
        score = float(score)
        metrics = {str(k): float(v) for k, v in metrics.items()}  # plain floats: safe to torch.load
        improved = best_score is None or score > best_score
        history.append({"epoch": epoch, "step": step, "score": score, "metrics": metrics, "best": improved})
        if improved:
            best_score, best_metrics, bad_evals = score, metrics, 0
            save(best_path, with_state=False)
        else:
            bad_evals += 1
        logger.info("epoch %d step %d: %s%s", epoch, step, metrics, " (best)" if improved else "")
        return bad_evals >= stopping_step

    model.train()
    last_saved = None
    run_loss = torch.zeros((), device=device)
    run_n, t_start, start_step, paths_done = 0, time.perf_counter(), step, 0
    overhead = 0.0  # seconds spent evaluating/saving, excluded from the throughput figures

    def timed(fn, *args):
        nonlocal overhead
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # charge queued training work to training, not to saving
        t0 = time.perf_counter()
        out = fn(*args)
        overhead += time.perf_counter() - t0
        return out

    last_loss = losses[-1][1] if losses else float("nan")
    bar = tqdm(total=total_steps, initial=step, disable=not config.show_progress, desc=config.stage,
               dynamic_ncols=True)
    while step < total_steps and not stopped_early:
        epoch, batch_index = divmod(step, steps_per_epoch)
        order = torch.randperm(n_paths, generator=torch.Generator().manual_seed(config.seed + epoch)).to(device)
        for b in range(batch_index, steps_per_epoch):
            x = data[order[b * bs:(b + 1) * bs]]
            lr = lr_at(step, config, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast():
                loss = model.loss(x, next_token_labels(x, PAD), slices)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            run_loss += loss.detach().float()
            run_n += 1
            paths_done += x.shape[0]
            bar.update(1)
            end_of_epoch = b == steps_per_epoch - 1
            if step % config.log_step == 0 or step == total_steps or end_of_epoch:
                last_loss = float(run_loss) / run_n  # the only host sync of the loop
                losses.append((step, last_loss))
                run_loss.zero_()
                run_n = 0
                elapsed = time.perf_counter() - t_start - overhead
                bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}",
                                paths_s=f"{paths_done / max(elapsed, 1e-9):.1f}")
            if end_of_epoch and do_eval and (epoch + 1) % eval_step == 0:
                stopped_early = timed(evaluate, epoch + 1)
            if step % config.save_step == 0 or step == total_steps or stopped_early:
                last_saved = timed(save, checkpoint_dir / f"step-{step:07d}", True)
                _prune(checkpoint_dir, config.keep_checkpoints)
            if step >= total_steps or stopped_early:
                break
    bar.close()
    elapsed = time.perf_counter() - t_start - overhead
    if last_saved is None and step > 0 and not (checkpoint_dir / f"step-{step:07d}").exists():
        last_saved = save(checkpoint_dir / f"step-{step:07d}", with_state=True)
    return TrainResult(
        step=step, epochs_completed=step // steps_per_epoch, last_loss=last_loss, losses=losses,
        history=history, best_score=best_score, best_metrics=best_metrics,
        best_checkpoint=best_path if best_path.exists() else None,
        last_checkpoint=last_saved or (checkpoint_dir / f"step-{step:07d}"),
        stopped_early=stopped_early,
        paths_per_second=paths_done / elapsed if elapsed > 0 else 0.0,
        tokens_per_second=paths_done * seq_len / elapsed if elapsed > 0 else 0.0)


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


def _has_resumable(directory: Path) -> bool:
    try:
        ckpt.resolve_checkpoint(directory, require_state=True)
        return True
    except ckpt.CheckpointError:
        return False


def _prune(directory: Path, keep: int) -> None:
    """Remove all but the newest ``keep`` step checkpoints (``best/`` is never removed)."""
    if keep <= 0:
        return
    steps = sorted(p for p in directory.glob("step-*") if p.is_dir())
    for old in steps[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
