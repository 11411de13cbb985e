"""Pop: every user gets the items with the most training interactions."""

from __future__ import annotations

import time

import numpy as np

from kgglm.baselines.base import BaselineSettings, EvaluateFn, Recommender


class Pop(Recommender):
    """Most-popular baseline: an item's score is its number of training interactions, for every user."""

    name = "Pop"

    def __init__(self) -> None:
        super().__init__()
        self.counts = np.zeros(0)

    def fit(self, dataset, settings: BaselineSettings, *, evaluate_fn: EvaluateFn | None = None) -> dict:
        t0 = time.perf_counter()
        self.dataset, self.settings = dataset, settings
        self.counts = np.bincount(dataset.splits["train"].items, minlength=dataset.n_items).astype(np.float64)
        stats: dict = {"epochs": 0, "seconds": time.perf_counter() - t0}
        if evaluate_fn is not None:  # nothing to stop early, but report the validation score
            stats["best_score"], stats["best_metrics"] = evaluate_fn(self)
        return stats

    def score_items(self, users: np.ndarray) -> np.ndarray:
        return np.tile(self.counts, (len(np.atleast_1d(users)), 1))
