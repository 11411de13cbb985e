"""Top-k ranking metrics (RecBole conventions), vectorised over users.

Input: a ``[n_users, K_max]`` matrix of recommended item indices (``-1`` = no item at that rank)
and each user's relevant items as CSR arrays. Binary relevance:

* ``recall@K``    = hits in the top K / |relevant|
* ``precision@K`` = hits in the top K / K
* ``hit@K``       = 1 if any hit in the top K
* ``mrr@K``       = 1 / rank of the first hit within K (0 when none)
* ``ndcg@K``      = DCG@K / IDCG@K with DCG = sum_hits 1 / log2(rank + 1) and the ideal DCG over
  ``min(|relevant|, K)`` items.

Each metric is the mean over the given users. Keys are lower-case (``ndcg@10``) as in RecBole.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

METRICS = ("recall", "mrr", "ndcg", "hit", "precision")


def normalize_metric_names(metrics: Iterable[str] | None) -> list[str]:
    """Lower-case metric names; ``None`` means all of :data:`METRICS`."""
    names = [m.lower() for m in (metrics or METRICS)]
    bad = [m for m in names if m not in METRICS]
    if bad:
        raise ValueError(f"unknown metric(s) {bad}; supported: {list(METRICS)}")
    return names


def hit_matrix(topk_items: np.ndarray, rel_indptr: np.ndarray, rel_items: np.ndarray) -> np.ndarray:
    """``hits[u, j]``: the j-th recommended item of user row ``u`` is relevant for that row.

    ``rel_indptr``/``rel_items`` are indexed by the *rows* of ``topk_items`` (one segment per row).
    """
    topk_items = np.asarray(topk_items, dtype=np.int64)
    n, _ = topk_items.shape
    rel_indptr = np.asarray(rel_indptr, dtype=np.int64)
    rel_items = np.asarray(rel_items, dtype=np.int64)
    if rel_indptr.shape != (n + 1,):
        raise ValueError(f"relevance indptr must have shape ({n + 1},) for {n} users, got {rel_indptr.shape}")
    width = int(max(topk_items.max(initial=-1), rel_items.max(initial=-1))) + 2  # key space per row
    rel_rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(rel_indptr))
    rel_keys = np.sort(rel_rows * width + rel_items)
    keys = np.arange(n, dtype=np.int64)[:, None] * width + topk_items
    pos = np.minimum(np.searchsorted(rel_keys, keys), max(len(rel_keys) - 1, 0))
    found = rel_keys[pos] == keys if len(rel_keys) else np.zeros(keys.shape, dtype=bool)
    return found & (topk_items >= 0)


def topk_metrics(topk_items: np.ndarray, rel_indptr: np.ndarray, rel_items: np.ndarray,
                 ks: Iterable[int] = (10,), metrics: Iterable[str] | None = None) -> dict[str, float]:
    """Mean ``metric@K`` over users for every K in ``ks`` (see module docstring).

    Every user row must have at least one relevant item (the evaluator only passes such users).
    Duplicate items within a row count once (a ranking never repeats an item).
    """
    names = normalize_metric_names(metrics)
    topk_items = np.asarray(topk_items, dtype=np.int64)
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"topk values must be >= 1, got {ks}")
    if ks[-1] > topk_items.shape[1]:
        raise ValueError(f"topk {ks[-1]} exceeds the {topk_items.shape[1]} ranked items per user")
    n_rel = np.diff(np.asarray(rel_indptr, dtype=np.int64))
    if topk_items.shape[0] == 0:
        return {f"{m}@{k}": 0.0 for k in ks for m in names}
    if (n_rel <= 0).any():
        raise ValueError(f"{int((n_rel <= 0).sum())} users have no relevant item; evaluate only users with "
                         "at least one item in the split")
    hits = hit_matrix(topk_items, rel_indptr, rel_items)
    # a repeated item must not be counted twice: keep only its first occurrence in the row
    order = np.argsort(topk_items, axis=1, kind="stable")
    srt = np.take_along_axis(topk_items, order, axis=1)
    dup_sorted = np.zeros_like(srt, dtype=bool)
    dup_sorted[:, 1:] = srt[:, 1:] == srt[:, :-1]
    dup = np.zeros_like(dup_sorted)
    np.put_along_axis(dup, order, dup_sorted, axis=1)
    hits &= ~dup

    kmax = ks[-1]
    hits = hits[:, :kmax].astype(np.float64)
    cum_hits = np.cumsum(hits, axis=1)
    discount = 1.0 / np.log2(np.arange(2, kmax + 2))
    dcg = np.cumsum(hits * discount, axis=1)
    idcg_table = np.cumsum(discount)
    first = np.where(hits.any(axis=1), hits.argmax(axis=1), kmax)  # 0-based rank of first hit
    out: dict[str, float] = {}
    for k in ks:
        h = cum_hits[:, k - 1]
        vals = {
            "recall": h / n_rel,
            "precision": h / k,
            "hit": (h > 0).astype(np.float64),
            "mrr": np.where(first < k, 1.0 / (first + 1), 0.0),
            "ndcg": dcg[:, k - 1] / idcg_table[np.minimum(n_rel, k) - 1],
        }
        for m in names:
            out[f"{m}@{k}"] = float(vals[m].mean())
    return out


def metric_value(results: dict, name: str) -> float:
    """Look up ``name`` (e.g. ``'NDCG@10'``) in a results dict, case-insensitively."""
    key = name.lower()
    if key not in results:
        raise KeyError(f"metric {name!r} not in results (have {sorted(k for k in results if '@' in k)})")
    return results[key]
