"""The baseline interface, early stopping, BPR sampling and a stop-gap full-ranking evaluation.

Every baseline is a :class:`Recommender`: ``fit(dataset, settings)`` trains on ``dataset.splits['train']``
only, and ``score_items(users)`` returns a dense ``[len(users), n_items]`` float score matrix
(higher is better). Masking seen items is the evaluator's job, never the model's.

Torch models (BPR, LightGCN) share :class:`TorchRecommender`: it owns the training loop (uniform
negative sampling, Adam, early stopping on ``evaluate_fn``) and subclasses only define their
parameters and ``calculate_loss``.
"""

from __future__ import annotations

import copy
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from kgglm.evaluate.evaluator import EvalConfig
from kgglm.evaluate.stopping import early_stopping

logger = logging.getLogger(__name__)

# evaluate_fn(model) -> (score to maximise, metrics dict)
EvaluateFn = Callable[["Recommender"], tuple[float, dict]]


@dataclass(frozen=True)
class BaselineSettings:
    """What the baselines train with; field names are config keys, their values the resolved ones
    (:func:`kgglm.settings.resolve`: the layers of ``configs/model/<NAME>.yaml`` applied), so no
    baseline reads a config or restates a default. ``valid``: what a grid is chosen by on valid when
    ``fit`` gets no ``evaluate_fn`` (``valid_metric`` alone)."""

    seed: int
    device: str
    epochs: int
    train_batch_size: int
    eval_step: int
    learning_rate: float
    weight_decay: float
    stopping_step: int
    embedding_size: int
    n_layers: int
    reg_weight: float
    reg_weight_grid: tuple
    k_grid: tuple
    shrink: float
    valid: EvalConfig

    def __post_init__(self) -> None:
        for key in ("epochs", "train_batch_size", "eval_step", "embedding_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.stopping_step < 0 or self.n_layers < 0 or self.shrink < 0:
            raise ValueError("stopping_step, n_layers and shrink must be >= 0")


class Recommender(ABC):
    """A recommender that scores every item for a batch of users.

    Subclasses set ``name`` and implement :meth:`fit` and :meth:`score_items`. Settings are the
    :class:`BaselineSettings` given to :meth:`fit` (resolved above, from the run config with the
    baseline's ``configs/model/<NAME>.yaml``). The baselines never read a config or a YAML file.
    """

    name: str = "Recommender"

    def __init__(self) -> None:
        self.dataset = None
        self.settings: BaselineSettings | None = None

    @abstractmethod
    def fit(self, dataset, settings: BaselineSettings, *, evaluate_fn: EvaluateFn | None = None) -> dict:
        """Train on ``dataset.splits['train']``; returns training statistics (epochs, seconds, ...)."""

    @abstractmethod
    def score_items(self, users: np.ndarray) -> np.ndarray:
        """Float scores ``[len(users), dataset.n_items]`` of every item for each user (higher is better)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class EarlyStopping:
    """RecBole's rule (:func:`kgglm.evaluate.stopping.early_stopping`): stop after *more than*
    ``patience`` evaluations without strict improvement."""

    def __init__(self, patience: int) -> None:
        self.patience = int(patience)
        self.best: float = -np.inf
        self.bad_steps = 0
        self.should_stop = False

    def update(self, score: float) -> bool:
        """Record one evaluation; True when it is a new best (ties are not an improvement)."""
        improved, self.bad_steps, self.should_stop = early_stopping(score, self.best, self.bad_steps, self.patience)
        if improved:
            self.best = float(score)
        return improved


# --------------------------------------------------------------------------------------- sampling
def pair_keys(users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """Sorted unique ``user * n_items + item`` keys, for fast membership tests."""
    return np.unique(np.asarray(users, np.int64) * n_items + np.asarray(items, np.int64))


def sample_negatives(users: np.ndarray, n_items: int, positive_keys: np.ndarray, rng: np.random.Generator,
                     max_rounds: int = 100) -> np.ndarray:
    """One uniform item per user that the user has not interacted with (rejection sampling).

    Vectorised: draw for everyone, then redraw only the collisions. A user who has seen every item
    cannot get a negative; after ``max_rounds`` such collisions are left as they are.
    """
    users = np.asarray(users, np.int64)
    neg = rng.integers(n_items, size=len(users))
    todo = np.arange(len(users))
    for _ in range(max_rounds):
        keys = users[todo] * n_items + neg[todo]
        pos = np.minimum(np.searchsorted(positive_keys, keys), max(len(positive_keys) - 1, 0))
        todo = todo[positive_keys[pos] == keys] if len(positive_keys) else todo[:0]
        if not len(todo):
            break
        neg[todo] = rng.integers(n_items, size=len(todo))
    return neg


# --------------------------------------------------------------------------------------- torch models
class TorchRecommender(nn.Module, Recommender):
    """Embedding models trained with the pairwise BPR objective on (user, positive, negative) triples.

    Subclasses implement :meth:`build` (create parameters for a dataset), :meth:`calculate_loss`
    and :meth:`score_items`; this class runs the epochs, early stopping and best-state restore.
    """

    def __init__(self) -> None:
        nn.Module.__init__(self)
        Recommender.__init__(self)

    @abstractmethod
    def build(self, dataset) -> None:
        """Create the parameters (and fixed buffers) for ``dataset``."""

    @abstractmethod
    def calculate_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """Mean loss of a batch of (user, positive item, negative item) index triples."""

    def train(self, mode: bool = True) -> TorchRecommender:
        self.invalidate_cache()  # parameters are about to change (or just did)
        return super().train(mode)

    def invalidate_cache(self) -> None:
        """Drop cached inference tensors; called whenever parameters may have changed."""

    def fit(self, dataset, settings: BaselineSettings, *, evaluate_fn: EvaluateFn | None = None) -> dict:
        self.dataset, self.settings = dataset, settings
        seed = settings.seed
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        device = settings.device
        self.build(dataset)
        self.to(device)
        epochs, batch_size, eval_step = settings.epochs, settings.train_batch_size, max(1, settings.eval_step)
        optimizer = torch.optim.Adam(self.parameters(), lr=float(settings.learning_rate),
                                     weight_decay=float(settings.weight_decay))
        train = dataset.splits["train"]
        users, items = np.asarray(train.users, np.int64), np.asarray(train.items, np.int64)
        positive_keys = pair_keys(users, items, dataset.n_items)
        stopper = EarlyStopping(settings.stopping_step)
        best_state, best_epoch, best_metrics = None, 0, {}
        history: list[dict] = []
        t0 = time.perf_counter()
        epoch = 0
        for epoch in range(1, epochs + 1):
            self.train()
            order = rng.permutation(len(users))  # RecBole shuffles the training pairs every epoch
            negatives = sample_negatives(users[order], dataset.n_items, positive_keys, rng)
            u_all = torch.as_tensor(users[order], device=device)
            p_all = torch.as_tensor(items[order], device=device)
            n_all = torch.as_tensor(negatives, device=device)
            total = 0.0
            for start in range(0, len(order), batch_size):
                sl = slice(start, start + batch_size)
                loss = self.calculate_loss(u_all[sl], p_all[sl], n_all[sl])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(u_all[sl])
            record = {"epoch": epoch, "loss": total / max(len(order), 1)}
            if evaluate_fn is not None and epoch % eval_step == 0:
                self.eval()
                with torch.no_grad():
                    score, metrics = evaluate_fn(self)
                record["score"] = float(score)
                if stopper.update(score):
                    best_state = copy.deepcopy(self.state_dict())
                    best_epoch, best_metrics = epoch, dict(metrics)
            history.append(record)
            logger.debug("%s epoch %d: %s", self.name, epoch, record)
            if stopper.should_stop:
                break
        if best_state is not None:
            self.load_state_dict(best_state)
        self.eval()
        return {"epochs": epoch, "best_epoch": best_epoch or epoch, "best_score": stopper.best
                if best_state is not None else None, "best_metrics": best_metrics,
                "loss": history[-1]["loss"] if history else None,
                "stopped_early": stopper.should_stop, "seconds": time.perf_counter() - t0, "history": history}


def xavier_embedding(n: int, dim: int, normal: bool) -> nn.Embedding:
    """An embedding table initialised like RecBole (xavier normal for BPR, uniform for LightGCN)."""
    emb = nn.Embedding(n, dim)
    (nn.init.xavier_normal_ if normal else nn.init.xavier_uniform_)(emb.weight)
    return emb


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """``mean(-log sigmoid(pos - neg))``, written with logsigmoid for numerical stability."""
    return -nn.functional.logsigmoid(pos_scores - neg_scores).mean()


# --------------------------------------------------------------------------------------- evaluation
def make_evaluate_fn(dataset, settings, split: str = "valid") -> EvaluateFn:
    """An ``evaluate_fn`` for :meth:`Recommender.fit`: :func:`rank_scorer` judged by the one evaluator
    (:func:`kgglm.evaluate.evaluate`) with ``settings`` (a :class:`~kgglm.evaluate.EvalConfig`):
    (``valid_metric`` value, all metrics) on ``split``."""
    from kgglm import distributed
    from kgglm.evaluate.evaluator import evaluate

    def evaluate_fn(model: Recommender) -> tuple[float, dict]:
        recs, seconds = distributed.rank_in_shards(
            lambda users: rank_scorer(model, dataset, users, split, settings.max_k, settings.eval_batch_size),
            dataset.eval_users(split), settings.eval_batch_size)
        ev = evaluate(recs, dataset, settings, seconds=seconds, label=getattr(model, "name", type(model).__name__))
        return ev.score, ev.metrics

    return evaluate_fn


def rank_scorer(model, dataset, users: np.ndarray, split: str, k: int, batch_size: int):
    """The scorers' ranker: top-``k`` unseen items of ``users`` by ``model.score_items``, in user
    batches (memory is ``batch_size x n_items``, whatever the number of users), as
    :class:`~kgglm.evaluate.ranked.Recommendations` without paths."""
    from kgglm.data.dataset import csr_rows
    from kgglm.evaluate.evaluator import rank_scores
    from kgglm.evaluate.ranked import Recommendations

    seen = dataset.seen_items(split)
    items, scores = [], []
    for start in range(0, len(users), batch_size):
        batch = users[start:start + batch_size]
        s = np.asarray(model.score_items(batch), dtype=np.float64)
        top = rank_scores(s, csr_rows(seen, batch), k)
        items.append(top)
        scores.append(np.where(top >= 0, np.take_along_axis(s, np.maximum(top, 0), axis=1), -np.inf))
    k = min(k, dataset.n_items)
    return Recommendations(users=users.copy(),
                           items=np.concatenate(items) if items else np.zeros((0, k), np.int64),
                           scores=(np.concatenate(scores) if scores else np.zeros((0, k))).astype(np.float32),
                           paths=np.zeros((len(users), 0, 0), np.int64), split=split)
