"""ItemKNN: item-item cosine similarity over the training interactions, top-k neighbours per item.

``sim(i, j) = |U_i & U_j| / (sqrt(|U_i|) sqrt(|U_j|) + shrink)`` with ``U_i`` the users who have
item ``i`` in train, ``sim(i, i) = 0``. For every target item ``j`` only its ``k`` most similar items
``i`` keep their weight (ties broken by the lower item index), and a user's score for ``j`` is the
sum of ``W[i, j]`` over the user's training items. ``k`` is chosen on valid from ``k_grid`` (see
:class:`~kgglm.baselines.itemitem.ItemItemRecommender`); ``shrink`` damps pairs of rare items.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from kgglm.baselines.itemitem import ItemItemRecommender, gram_matrix


def cosine_similarity(gram: np.ndarray, shrink: float) -> np.ndarray:
    """Shrunk cosine ``G / (sqrt(d) sqrt(d)^T + shrink)`` with ``d = diag(G)``, zero diagonal."""
    if shrink < 0:
        raise ValueError(f"ItemKNN: shrink must be >= 0, got {shrink}")
    norm = np.sqrt(np.diag(gram))
    denom = np.outer(norm, norm) + float(shrink)
    sim = np.divide(gram, denom, out=np.zeros_like(gram), where=denom > 0)
    np.fill_diagonal(sim, 0.0)
    return sim


def neighbour_ranks(sim: np.ndarray) -> np.ndarray:
    """``rank[i, j]``: position of item ``i`` among item ``j``'s neighbours (0 = most similar)."""
    order = np.argsort(-sim, axis=0, kind="stable")  # stable: ties go to the lower item index
    ranks = np.empty_like(order)
    ranks[order, np.arange(sim.shape[1])[None, :]] = np.arange(sim.shape[0])[:, None]
    return ranks


class ItemKNN(ItemItemRecommender):
    """Cosine item kNN with ``shrink``; the neighbourhood size ``k`` chosen on valid from ``k_grid``."""

    name = "ItemKNN"
    grid_key = "k_grid"
    value_name = "k"

    def prepare(self, x: sp.csr_matrix) -> None:
        self.similarity = cosine_similarity(gram_matrix(x), float(self.settings.shrink))
        self.ranks = neighbour_ranks(self.similarity)

    def grid(self) -> list:
        values = self.settings.k_grid
        if not values:
            raise ValueError("ItemKNN: set k_grid (a list of neighbourhood sizes) in the config")
        if any(int(v) <= 0 for v in values):
            raise ValueError(f"ItemKNN: every k in k_grid must be positive, got {values}")
        return [int(v) for v in values]

    def weights_for(self, value: int) -> np.ndarray:
        return np.where(self.ranks < int(value), self.similarity, 0.0)
