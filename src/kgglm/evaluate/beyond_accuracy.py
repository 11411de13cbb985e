r"""Beyond-accuracy metrics of top-k lists, as defined in the explainable-recommendation studies'
code (Balloccu et al. ECIR 2023 replicability study; hopwise 0.9.1 implements the same ones).

Input: ``topk_items [U, K]`` item indices (``-1`` = no item at that rank); ``hit_matrix [U, K]``
as returned by :func:`kgglm.evaluate.metrics.hit_matrix`. Per-user values are averaged over the
``U`` rows; ``k`` is the number of columns.

* ``coverage``     = |{items in any top-k}| / n_items.
* ``novelty``      = mean_u mean_{i in top-k(u)} (1 - pop(i)), pop(i) = (c_i - min c) / (max c - min c)
  over the whole catalogue's training counts ``c`` (the studies' min-max popularity; missing
  ranks are skipped, a user with no item is left out). Not the -log2 self-information variant.
* ``serendipity``  = |{i in top-k(u) : i not in Pop's top-k(u)}| / k (the studies' and hopwise's
  unexpectedness share); with ``hit_matrix``, only relevant unexpected items count (Ge et al. 2010:
  |UNEXP & USEFUL| / k). Missing ranks never count.
* ``ndcg_paper@k`` = DCG / DCG of the same hits sorted first, with the DCG of the papers' code
  (``dcg_at_k(method=0)``): ``r_1 + sum_{i=2..k} r_i / log2(i)`` (ranks 1 and 2 both weigh 1);
  0 without hits. It normalises by the hits found, not by |relevant| as RecBole's ``ndcg@k``.
"""

from __future__ import annotations

import numpy as np


def _as_topk(topk_items: np.ndarray) -> np.ndarray:
    topk = np.asarray(topk_items, dtype=np.int64)
    if topk.ndim != 2:
        raise ValueError(f"topk_items must be 2-D [users, K], got shape {topk.shape}")
    return topk


def coverage(topk_items: np.ndarray, n_items: int) -> float:
    """Share of the catalogue recommended to at least one user (``-1`` entries ignored)."""
    topk = _as_topk(topk_items)
    if n_items <= 0:
        raise ValueError(f"n_items must be positive, got {n_items}")
    valid = topk[(topk >= 0) & (topk < n_items)]
    return float(np.unique(valid).size / n_items)


def novelty(topk_items: np.ndarray, train_item_counts: np.ndarray) -> float:
    """Mean ``1 - minmax(training count)`` of the recommended items (see module docstring).

    ``train_item_counts`` has one entry per catalogue item (0 for items never seen in training),
    e.g. ``np.bincount(dataset.splits['train'].items, minlength=dataset.n_items)``.
    """
    topk = _as_topk(topk_items)
    counts = np.asarray(train_item_counts, dtype=np.float64)
    if counts.size == 0:
        raise ValueError("train_item_counts is empty")
    lo, hi = counts.min(), counts.max()
    pop = (counts - lo) / (hi - lo) if hi > lo else np.zeros_like(counts)
    valid = (topk >= 0) & (topk < counts.size)
    per_item = np.where(valid, 1.0 - pop[np.where(valid, topk, 0)], 0.0)
    n = valid.sum(axis=1)
    keep = n > 0
    if not keep.any():
        return 0.0
    return float((per_item.sum(axis=1)[keep] / n[keep]).mean())


def serendipity(topk_items: np.ndarray, pop_topk: np.ndarray, hit_matrix: np.ndarray | None = None) -> float:
    """Share of each top-k that Pop would not have recommended (see module docstring).

    ``pop_topk`` is Pop's ranking per row ``[U, K']`` (usually excluding each user's training
    items) or one global ``[K']`` list. With ``hit_matrix`` only relevant items count.
    """
    topk = _as_topk(topk_items)
    n_rows, k = topk.shape
    pop = np.asarray(pop_topk, dtype=np.int64)
    if pop.ndim == 1:
        pop = np.broadcast_to(pop, (n_rows, pop.size))
    if pop.shape[0] != n_rows:
        raise ValueError(f"pop_topk has {pop.shape[0]} rows for {n_rows} users")
    if n_rows == 0:
        return 0.0
    # membership of each recommended item in the same row of pop_topk: sort-and-search per row
    width = int(max(topk.max(initial=-1), pop.max(initial=-1))) + 2
    rows = np.arange(n_rows, dtype=np.int64)[:, None]
    pop_keys = np.sort((rows * width + pop).ravel())
    keys = rows * width + topk
    pos = np.minimum(np.searchsorted(pop_keys, keys), max(pop_keys.size - 1, 0))
    in_pop = pop_keys[pos] == keys if pop_keys.size else np.zeros(keys.shape, dtype=bool)
    unexpected = (topk >= 0) & ~in_pop
    if hit_matrix is not None:
        hits = np.asarray(hit_matrix, dtype=bool)
        if hits.shape != topk.shape:
            raise ValueError(f"hit_matrix shape {hits.shape} != topk_items shape {topk.shape}")
        unexpected &= hits
    return float((unexpected.sum(axis=1) / k).mean())


def ndcg_paper(hit_matrix: np.ndarray, k: int) -> float:
    """``ndcg_paper@k``: the papers' NDCG, DCG over the DCG of the same hits sorted (module docstring)."""
    hits = np.asarray(hit_matrix, dtype=np.float64)
    if hits.ndim != 2:
        raise ValueError(f"hit_matrix must be 2-D [users, K], got shape {hits.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    hits = hits[:, :k]  # a shorter list is the same as one padded with misses
    if hits.shape[0] == 0:
        return 0.0
    ranks = np.arange(1, hits.shape[1] + 1)
    discount = np.ones(hits.shape[1])
    discount[1:] = 1.0 / np.log2(ranks[1:])  # rank 1 -> 1, rank i >= 2 -> 1 / log2(i)
    dcg = hits @ discount
    ideal = np.cumsum(discount)
    n_hits = hits.sum(axis=1).astype(np.int64)
    idcg = np.where(n_hits > 0, ideal[np.maximum(n_hits, 1) - 1], 1.0)
    return float(np.where(n_hits > 0, dcg / idcg, 0.0).mean())
