"""Recency and popularity tables of a dataset, for explanation metrics and their post-processing.

LIR (linking interaction recency) of every training interaction and SEP (shared entity
popularity) of every node, as defined in :mod:`kgglm.evaluate.explanation` (the ECIR 2023 /
hopwise 0.9.1 variant: a timestamp- or degree-valued EMA, min-max normalised, ties averaged).
They live in the data layer because both the evaluation and the decoder's explanation
post-processing (:mod:`kgglm.decode.postprocess`) read them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kgglm.data.graph import CollaborativeGraph


def normalized_ema(values: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """Tie-averaged, min-max normalised EMA of each segment ``values[indptr[i]:indptr[i+1]]``.

    Each segment must be sorted ascending. See the module docstring for the formula. Vectorised:
    with ``q = 1 - a``, ``EMA_t = sum_j q^-j v_j / sum_j q^-j``; since the span is the segment
    length, ``q^-j <= ((n+1)/(n-1))^(n-1) < e^2``, so the weights never overflow, and values are
    rescaled to [0, 1] per segment first (the EMA commutes with affine maps) to keep the
    running sums well conditioned.
    """
    v = np.asarray(values, dtype=np.float64)
    indptr = np.asarray(indptr, dtype=np.int64)
    n = len(v)
    if indptr[0] != 0 or indptr[-1] != n or (np.diff(indptr) < 0).any():
        raise ValueError("indptr must start at 0, end at len(values) and be non-decreasing")
    if n == 0:
        return v.copy()
    lengths = np.diff(indptr)
    seg = np.repeat(np.arange(len(lengths)), lengths)
    first = np.zeros(n, dtype=bool)
    first[indptr[:-1][lengths > 0]] = True
    if (np.diff(v)[~first[1:]] < 0).any():
        raise ValueError("values must be sorted ascending within each segment")
    pos = np.arange(n) - indptr[seg]
    length = lengths[seg]
    start, last = indptr[:-1][seg], indptr[1:][seg] - 1
    span = v[last] - v[start]
    const = span == 0
    # constant segment -> its ranks (hopwise); otherwise rescale to [0, 1]
    x = np.where(const, pos / np.maximum(length - 1, 1), (v - v[start]) / np.where(const, 1.0, span))
    log_ratio = np.where(length > 1, np.log((length + 1.0) / np.maximum(length - 1.0, 1.0)), 0.0)
    w = np.exp(pos * log_ratio)
    cw, cwx = np.cumsum(w), np.cumsum(w * x)
    base = start - 1
    cw_local = cw - np.where(base >= 0, cw[np.maximum(base, 0)], 0.0)
    cwx_local = cwx - np.where(base >= 0, cwx[np.maximum(base, 0)], 0.0)
    ema = cwx_local / cw_local
    # an EMA of an ascending sequence is ascending, so its min/max are its first/last values
    lo, hi = ema[start], ema[last]
    norm = np.where(hi > lo, (ema - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0)
    # tie groups: equal values (or, in a constant segment, the whole segment) share their mean
    new_group = first.copy()
    new_group[1:] |= v[1:] != v[:-1]
    group = np.cumsum(new_group) - 1
    means = np.bincount(group, weights=norm) / np.bincount(group)
    return means[group]


def lir_table(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray,
              n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """LIR of every training interaction: sorted keys ``user * n_items + item`` and their values.

    Each user's interactions are sorted by timestamp and scored with :func:`normalized_ema`. A
    user-item pair seen more than once keeps its highest (most recent) LIR.
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    ts = np.asarray(timestamps, dtype=np.float64)
    order = np.lexsort((ts, users))
    users, items, ts = users[order], items[order], ts[order]
    n_users = int(users.max(initial=-1)) + 1
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=n_users), out=indptr[1:])
    values = normalized_ema(ts, indptr)
    keys = users * n_items + items
    order = np.lexsort((values, keys))  # per key ascending value: the last one is the max
    keys, values = keys[order], values[order]
    keep = np.ones(len(keys), dtype=bool)
    keep[:-1] = keys[1:] != keys[:-1]
    return keys[keep], values[keep]


def sep_table(graph: CollaborativeGraph) -> np.ndarray:
    """SEP of every node id: users ranked among users, items and entities together (as hopwise,
    where items are KG entities), by ``graph.degree()``; degree-0 nodes get 0."""
    degree = graph.degree().astype(np.float64)
    sep = np.zeros(graph.n_nodes, dtype=np.float64)
    for lo, hi in ((0, graph.n_users), (graph.n_users, graph.n_nodes)):
        nodes = lo + np.flatnonzero(degree[lo:hi] > 0)
        nodes = nodes[np.argsort(degree[nodes], kind="stable")]
        sep[nodes] = normalized_ema(degree[nodes], np.array([0, len(nodes)]))
    return sep


@dataclass(frozen=True)
class ExplanationTables:
    """Per-dataset lookups for :func:`explanation_metrics`, computed once (vectorised)."""

    graph: CollaborativeGraph
    relation_names: np.ndarray  # str, (n_relations,)
    lir_keys: np.ndarray  # sorted int64 user * n_items + item of training interactions
    lir_values: np.ndarray  # float64, LIR of each key
    sep: np.ndarray  # float64 (n_nodes,)

    @classmethod
    def from_dataset(cls, dataset) -> ExplanationTables:
        train = dataset.splits["train"]
        if train.timestamps is None:  # no timestamps: LIR is undefined (reported as nan)
            keys, values = np.zeros(0, dtype=np.int64), np.zeros(0)
        else:
            keys, values = lir_table(train.users, train.items, train.timestamps, dataset.graph.n_items)
        return cls(dataset.graph, np.asarray(dataset.relation_tokens).astype(str), keys, values,
                   sep_table(dataset.graph))

    @property
    def has_timestamps(self) -> bool:
        return len(self.lir_keys) > 0

    def lir(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """LIR of ``(user, item)`` pairs (broadcast); 0 for pairs that are not training interactions."""
        users, items = np.broadcast_arrays(np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64))
        n_items = self.graph.n_items
        ok = (items >= 0) & (items < n_items) & (users >= 0)
        keys = np.where(ok, users * n_items + items, -1)
        if len(self.lir_keys) == 0:
            return np.zeros(keys.shape)
        pos = np.minimum(np.searchsorted(self.lir_keys, keys), len(self.lir_keys) - 1)
        found = ok & (self.lir_keys[pos] == keys)
        return np.where(found, self.lir_values[pos], 0.0)
