"""KGItemKNN: content-based item kNN over the knowledge graph, no training.

An item's *features* are its KG neighbours (entities or other items, over any relation, both
directions, each counted once). Feature ``e`` gets the IDF weight ``w_e = log(n_items / df_e)``,
``df_e`` = number of items that have it, so a genre shared by half the catalogue counts little and
a director shared by three films counts a lot. Similarity ``sim(i, j) = sum of w_e over the
features i and j share`` (``i != j``), i.e. ``S = A diag(w) A^T`` with ``A`` the binary item-feature
matrix; a user's score for item ``j`` is ``sum_{i in train(u)} sim(i, j)``.

``S`` is a torch sparse product of two sparse matrices, so memory grows with the number of
item pairs that share a feature, never with ``n_entities^2``. For scoring, ``S`` is made dense
when ``n_items <= DENSE_MAX_ITEMS`` (30,000: at most 3.6 GB of float32; ml-100k needs 11 MB),
because a dense matrix product is far faster than a sparse one; above that it stays sparse.
Items without KG features score 0 for everyone.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch

from kgglm.baselines.base import BaselineSettings, EvaluateFn, Recommender

DENSE_MAX_ITEMS = 30_000


def item_features(dataset) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (item index, feature node id) pairs: each item's KG neighbours over any relation
    (:meth:`kgglm.data.dataset.Dataset.item_features`)."""
    return dataset.item_features()


def kg_item_similarity(n_items: int, items: np.ndarray, features: np.ndarray) -> torch.Tensor:
    """IDF-weighted shared-feature similarity ``S [n_items, n_items]`` (sparse, zero diagonal)."""
    _, feature_col, df = np.unique(features, return_inverse=True, return_counts=True)
    weight = np.log(n_items / df)  # df >= 1; a feature of a single item has no pair anyway
    shape = (n_items, len(df))
    index = torch.as_tensor(np.stack([items, feature_col]))
    a = torch.sparse_coo_tensor(index, torch.ones(len(items), dtype=torch.float64), shape,
                                check_invariants=True).coalesce()
    a_w = torch.sparse_coo_tensor(index, torch.as_tensor(weight[feature_col]), shape, check_invariants=True).coalesce()
    with warnings.catch_warnings():  # torch warns that its sparse-sparse product (CSR internally) is beta
        warnings.simplefilter("ignore", UserWarning)
        sim = torch.sparse.mm(a_w, a.t().coalesce()).coalesce()
    idx, val = sim.indices(), sim.values()
    off_diagonal = (idx[0] != idx[1]) & (val != 0)
    return torch.sparse_coo_tensor(idx[:, off_diagonal], val[off_diagonal].float(), (n_items, n_items),
                                   check_invariants=False).coalesce()


class KGItemKNN(Recommender):
    """Score = IDF-weighted KG features shared with the user's training items (see module docstring)."""

    name = "KGItemKNN"

    def __init__(self) -> None:
        super().__init__()
        self.similarity: torch.Tensor | None = None
        self.indptr = np.zeros(1, dtype=np.int64)
        self.history_items = np.zeros(0, dtype=np.int64)

    def fit(self, dataset, settings: BaselineSettings, *, evaluate_fn: EvaluateFn | None = None) -> dict:
        t0 = time.perf_counter()
        self.dataset, self.settings = dataset, settings
        items, features = item_features(dataset)
        similarity = kg_item_similarity(dataset.n_items, items, features)
        nnz = int(similarity._nnz())
        self.similarity = similarity.to_dense() if dataset.n_items <= DENSE_MAX_ITEMS else similarity
        train = dataset.splits["train"]
        keys = np.unique(np.asarray(train.users, np.int64) * dataset.n_items + np.asarray(train.items, np.int64))
        self.indptr = np.zeros(dataset.n_users + 1, dtype=np.int64)  # each user's train items, CSR
        np.cumsum(np.bincount(keys // dataset.n_items, minlength=dataset.n_users), out=self.indptr[1:])
        self.history_items = keys % dataset.n_items
        stats: dict = {"epochs": 0, "item_features": len(items), "similarity_nnz": nnz,
                       "seconds": time.perf_counter() - t0}
        if evaluate_fn is not None:
            stats["best_score"], stats["best_metrics"] = evaluate_fn(self)
        return stats

    @torch.no_grad()
    def score_items(self, users: np.ndarray) -> np.ndarray:
        users = np.atleast_1d(np.asarray(users, np.int64))
        lo, counts = self.indptr[users], self.indptr[users + 1] - self.indptr[users]
        rows = np.repeat(np.arange(len(users)), counts)
        pos = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(lo, counts)
        history = torch.zeros(len(users), self.dataset.n_items)  # [batch, n_items], 1 = train item
        history[torch.as_tensor(rows), torch.as_tensor(self.history_items[pos])] = 1.0
        if self.similarity.layout == torch.strided:
            return (history @ self.similarity).numpy()
        # S is symmetric, so history @ S = (S @ history^T)^T: a sparse-dense product
        return torch.sparse.mm(self.similarity, history.T).T.contiguous().numpy()
