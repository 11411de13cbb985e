"""Item-item models: a user's score for item ``j`` is ``sum_{i in train(u)} W[i, j]``.

:class:`ItemItemRecommender` owns what EASE and ItemKNN share: the binary training matrix ``X``
(users x items, duplicates counted once), the dense weight matrix ``W`` and the choice of one
hyper-parameter from a grid on valid (the weights of each candidate are built, evaluated with
``evaluate_fn`` and the best one kept; ties go to the earlier grid value). Scoring is ``X[users] @ W``.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from kgglm.baselines.base import BaselineSettings, EvaluateFn, Recommender, make_evaluate_fn


def train_matrix(dataset) -> sp.csr_matrix:
    """The binary ``[n_users, n_items]`` training matrix (a repeated interaction counts once)."""
    train = dataset.splits["train"]
    x = sp.csr_matrix((np.ones(len(train.users)), (np.asarray(train.users, np.int64),
                                                   np.asarray(train.items, np.int64))),
                      shape=(dataset.n_users, dataset.n_items))
    x.data[:] = 1.0  # csr sums duplicates
    return x


def gram_matrix(x: sp.csr_matrix) -> np.ndarray:
    """Dense float64 ``X^T X`` (item co-occurrence counts; the diagonal holds item popularity)."""
    return np.asarray((x.T @ x).toarray(), dtype=np.float64)


class ItemItemRecommender(Recommender):
    """Base of EASE and ItemKNN: subclasses name their grid key and build ``W`` for one value."""

    grid_key: str = ""  # config key of the grid, e.g. 'reg_weight_grid'
    value_name: str = ""  # name of the chosen value in the training statistics, e.g. 'reg_weight'

    def __init__(self) -> None:
        super().__init__()
        self.x = sp.csr_matrix((0, 0))
        self.weights = np.zeros((0, 0), dtype=np.float32)
        self.chosen: Any = None

    @abstractmethod
    def prepare(self, x: sp.csr_matrix) -> None:
        """Compute what every grid value shares (e.g. the Gram matrix) from the training matrix."""

    @abstractmethod
    def weights_for(self, value: Any) -> np.ndarray:
        """The dense ``[n_items, n_items]`` weight matrix for one grid value."""

    def grid(self) -> Sequence:
        """The candidate values: the settings' ``grid_key`` field, else ``[value_name]``."""
        values = getattr(self.settings, self.grid_key) or [getattr(self.settings, self.value_name)]
        if any(v is None for v in values):
            raise ValueError(f"{self.name}: set {self.grid_key} (a list) or {self.value_name} in the config")
        return list(values)

    def fit(self, dataset, settings: BaselineSettings, *, evaluate_fn: EvaluateFn | None = None) -> dict:
        t0 = time.perf_counter()
        self.dataset, self.settings = dataset, settings
        self.x = train_matrix(dataset)
        self.prepare(self.x)
        values = self.grid()
        if len(values) > 1 and evaluate_fn is None:
            evaluate_fn = make_evaluate_fn(dataset, settings.valid)
        best_score, best_metrics, best_weights, history = -np.inf, {}, None, []
        for value in values:
            self.weights = self.weights_for(value).astype(np.float32)
            if evaluate_fn is None:  # a single value and nothing to report
                best_weights, self.chosen = self.weights, value
                break
            score, metrics = evaluate_fn(self)
            history.append({self.value_name: value, "score": float(score)})
            if score > best_score:
                best_score, best_metrics, best_weights, self.chosen = float(score), dict(metrics), self.weights, value
        self.weights = best_weights
        stats: dict = {"epochs": 0, self.value_name: self.chosen, "history": history,
                       "seconds": time.perf_counter() - t0}
        if history:
            stats["best_score"], stats["best_metrics"] = best_score, best_metrics
        return stats

    def score_items(self, users: np.ndarray) -> np.ndarray:
        users = np.atleast_1d(np.asarray(users, np.int64))
        return np.asarray(self.x[users] @ self.weights, dtype=np.float32)
