"""Training the history expert (:class:`kgglm.model.expert.HistoryExpert`) on the users' training items.

Mult-DAE's recipe: every user once per epoch, in shuffled batches of users, AdamW on the expert's
parameters only (the path model is untouched), the model chosen on valid every ``eval_step`` epochs
with RecBole's early-stopping rule (:func:`kgglm.evaluate.stopping.early_stopping`). A few hundred
full passes cost seconds to a minute on a CPU: the expert is a single hidden layer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from kgglm.evaluate.stopping import early_stopping

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExpertFitConfig:
    """The expert's schedule: the keys of ``history_expert_args``, with their defaults in
    ``configs/overall.yaml`` only (:func:`kgglm.settings.resolve` builds it)."""

    epochs: int
    learning_rate: float
    weight_decay: float
    batch_size: int
    eval_step: int
    stopping_step: int
    seed: int = 2020  # the run's ``seed``; a default only for callers building one by hand

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_step"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"history_expert_args.{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0 or self.weight_decay < 0 or self.stopping_step < 0:
            raise ValueError("history_expert_args: learning_rate must be > 0, weight_decay and stopping_step >= 0")

@dataclass
class ExpertFitResult:
    """What :func:`fit_history_expert` did: epochs run, the chosen epoch and its valid score."""

    epochs: int
    best_epoch: int
    best_score: float | None
    seconds: float
    history: list[tuple[int, float, float]]  # (epoch, mean training loss, valid score)

    def to_dict(self) -> dict:
        return {"epochs": self.epochs, "best_epoch": self.best_epoch, "best_valid_score": self.best_score,
                "seconds": round(self.seconds, 2), "history": [list(h) for h in self.history]}


def fit_history_expert(model, users: torch.Tensor, config: ExpertFitConfig,
                       evaluate_fn: Callable[[Any], float] | None = None) -> ExpertFitResult:
    """Train ``model.expert`` on the histories attached to ``model`` (``set_user_history``) of the
    user tokens ``users``; with ``evaluate_fn(model) -> valid score`` keep the best epoch's weights.

    The rest of the model is neither updated nor put in training mode; the expert is frozen again
    afterwards (``requires_grad`` off), as it is built."""
    expert = model.expert
    if expert is None:
        raise ValueError("fit_history_expert: the model has no history expert (history_expert_args.dim is 0)")
    expert.requires_grad_(True)
    try:
        return _fit(model, expert, users, config, evaluate_fn)
    finally:
        expert.requires_grad_(False)
        expert.eval()


def _fit(model, expert, users: torch.Tensor, config: ExpertFitConfig,
         evaluate_fn: Callable[[Any], float] | None) -> ExpertFitResult:
    device = expert.dec.weight.device
    users = users.to(device)
    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.AdamW(expert.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    best, best_state, bad, best_epoch, history = None, None, 0, 0, []
    start, epoch = time.perf_counter(), 0
    for epoch in range(1, config.epochs + 1):
        expert.train()
        order = users[torch.randperm(users.shape[0], generator=gen).to(device)]
        total = 0.0
        for lo in range(0, order.shape[0], config.batch_size):
            batch = order[lo:lo + config.batch_size]
            row, toks = model.history_entries(batch)
            loss = expert.loss(batch.shape[0], row, toks - model.item_range[0])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * batch.shape[0]
        if evaluate_fn is None or epoch % config.eval_step:
            continue
        expert.eval()
        score = float(evaluate_fn(model))
        history.append((epoch, total / max(users.shape[0], 1), score))
        logger.info("history expert epoch %d: loss %.3f, valid %.4f", epoch, history[-1][1], score)
        improved, bad, stop = early_stopping(score, best, bad, config.stopping_step)
        if improved:
            best, best_epoch = score, epoch
            best_state = {k: v.detach().clone() for k, v in expert.state_dict().items()}
        if stop:
            break
    if best_state is not None:
        expert.load_state_dict(best_state)
    return ExpertFitResult(epochs=epoch, best_epoch=best_epoch or epoch, best_score=best,
                           seconds=time.perf_counter() - start, history=history)
