"""The walk machinery every path sampler shares: paths as arrays, one vectorised hop, duplicates.

:class:`Walker` draws one hop for many walks at once under the walk rules of :mod:`kgglm.paths.sampling`
(no back-step, relation balance, dead ends); :func:`walk` chains hops; :func:`first_unique` and
:func:`group_sizes` find equal path rows by packing their columns into integer words.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kgglm.data.graph import UI_RELATION, CollaborativeGraph

_BACKSTEP_ROUNDS = 3  # redraws before the exact (slower) fallback for walks that went back


@dataclass(frozen=True)
class PathBatch:
    """Paths as node ids ``[P, H+1]`` and relation ids ``[P, H]``, padded with ``-1`` after the end."""

    nodes: np.ndarray
    relations: np.ndarray

    def __len__(self) -> int:
        return int(self.nodes.shape[0])

    @property
    def hops(self) -> np.ndarray:
        """Number of real hops of each path."""
        return (self.relations >= 0).sum(axis=1)

    def tokens(self, vocab) -> np.ndarray:
        """Token ids with [BOS]/[EOS]/[PAD] (see :meth:`Vocabulary.encode_paths`)."""
        return vocab.encode_paths(self.nodes, self.relations)

    def __getitem__(self, index) -> "PathBatch":
        return PathBatch(self.nodes[index], self.relations[index])


# ---------------------------------------------------------------------------------- one hop
class Walker:
    """Per-node edge ranges: UI edges are ``[indptr, ui_end)``, KG edges ``[ui_end, indptr+1)``.

    Rows are sorted by (relation, neighbor) and the UI relation is 0, so each row starts with its
    UI block; its end is found by binary search in the sorted edge keys.
    """

    def __init__(self, graph: CollaborativeGraph, ui_share: float | None):
        self.graph = graph
        self.neighbor = graph.neighbor
        self.relation = graph.relation
        self.start = graph.indptr[:-1]
        self.end = graph.indptr[1:]
        nodes = np.arange(graph.n_nodes, dtype=np.int64)
        first_kg_key = (nodes * graph.n_relations + (UI_RELATION + 1)) * graph.n_nodes
        self.ui_end = np.searchsorted(graph.edge_keys, first_kg_key).astype(np.int64)
        self.ui_share = ui_share
        # fine-tuning's last hop and exact paths: edges sorted by (src, dst) and the training CSR
        self.pair_order: np.ndarray | None = None
        self.pair_keys: np.ndarray | None = None
        self.pair_run_end: np.ndarray | None = None
        self.train_indptr: np.ndarray | None = None

    def index_pairs(self, train_keys: np.ndarray, n_items: int) -> None:
        """Build (once per sampling run) the edges sorted by ``src * n_nodes + dst`` (``pair_keys``,
        ``pair_order`` maps back to edge ids; a node's row keeps its ``indptr`` range), the end of
        each run of equal keys (several relations between two nodes), and the CSR of the users'
        training items (``train_keys`` is sorted by user)."""
        if self.pair_order is not None:
            return
        g = self.graph
        src = np.repeat(np.arange(g.n_nodes, dtype=np.int64), np.diff(g.indptr))
        pair = src * g.n_nodes + g.neighbor
        self.pair_order = np.argsort(pair, kind="stable")
        self.pair_keys = pair[self.pair_order]
        ends = np.flatnonzero(np.diff(self.pair_keys)) + 1
        ends = np.append(ends, self.pair_keys.size)
        self.pair_run_end = np.repeat(ends, np.diff(ends, prepend=0))
        self.train_indptr = np.zeros(g.n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(train_keys // n_items, minlength=g.n_users), out=self.train_indptr[1:])

    def find_pairs(self, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each query, the range ``[lo, lo + count)`` of ``pair_keys`` holding the edges
        ``src -> dst`` (any relation); ``count`` is 0 when there is none."""
        key = src * self.graph.n_nodes + dst
        lo = np.searchsorted(self.pair_keys, key)
        at = np.minimum(lo, self.pair_keys.size - 1)
        count = np.where(self.pair_keys[at] == key, self.pair_run_end[at] - lo, 0)
        return lo, count

    def kg_degree(self) -> np.ndarray:
        return self.end - self.ui_end

    def step(self, rng: np.random.Generator, cur: np.ndarray, prev: np.ndarray, use_ui: bool):
        """Next edge index of each walk at ``cur`` coming from ``prev`` (-1 at the start).

        Returns edge indices, ``-1`` for walks at a dead end.
        """
        a = self.start[cur] if use_ui else self.ui_end[cur]
        m, b = self.ui_end[cur], self.end[cur]
        edge = self._draw(rng, a, m, b)
        dead = b == a
        edge[dead] = -1
        back = ~dead & (prev >= 0)
        back[back] = self.neighbor[edge[back]] == prev[back]
        for _ in range(_BACKSTEP_ROUNDS):
            idx = np.flatnonzero(back)
            if idx.size == 0:
                return edge
            edge[idx] = self._draw(rng, a[idx], m[idx], b[idx])
            back[idx] = self.neighbor[edge[idx]] == prev[idx]
        idx = np.flatnonzero(back)
        if idx.size:
            edge[idx] = self._exact_non_back(rng, a[idx], b[idx], prev[idx], edge[idx])
        return edge

    def _draw(self, rng, a, m, b) -> np.ndarray:
        """One edge per walk in ``[a, b)``; UI block ``[a, m)`` chosen with probability ui_share."""
        u = rng.random(a.shape[0])
        if self.ui_share is None:
            return a + (u * (b - a)).astype(np.int64)
        n_ui, n_kg = m - a, b - m
        pick_ui = (n_ui > 0) & ((n_kg == 0) | (rng.random(a.shape[0]) < self.ui_share))
        lo = np.where(pick_ui, a, m)
        size = np.where(pick_ui, n_ui, n_kg)
        return lo + (u * size).astype(np.int64)

    def _exact_non_back(self, rng, a, b, prev, fallback) -> np.ndarray:
        """Uniform edge in ``[a, b)`` whose neighbour is not ``prev``; ``fallback`` when none exists.

        Expands the rows of only the few walks still going back after the rejection rounds.
        """
        size = b - a
        group = np.repeat(np.arange(size.shape[0]), size)
        pos = np.arange(size.sum()) - np.repeat(np.cumsum(size) - size, size) + a[group]
        ok = self.neighbor[pos] != prev[group]
        count = np.bincount(group, weights=ok, minlength=size.shape[0]).astype(np.int64)
        rank = (rng.random(size.shape[0]) * count).astype(np.int64) + 1  # 1-based target
        running = np.cumsum(ok)
        before = np.concatenate([[0], running])[np.cumsum(size) - size]  # ok count before group
        hit = ok & (running - before[group] == rank[group])
        out = fallback.copy()
        out[group[hit]] = pos[hit]
        return out


def walk(walker: Walker, rng, starts: np.ndarray, hops: int, first_ui: bool, then_ui: bool):
    """Walk ``hops`` hops from ``starts`` (UI edges allowed on hop 1 if ``first_ui``, later if
    ``then_ui``); returns nodes/relations padded with -1 after dead ends."""
    p = starts.shape[0]
    nodes = np.full((p, hops + 1), -1, dtype=np.int64)
    rels = np.full((p, hops), -1, dtype=np.int64)
    nodes[:, 0] = starts
    alive = slice(None)  # all walks, until the first dead end (then an index array)
    for h in range(hops):
        cur = nodes[alive, h]
        prev = nodes[alive, h - 1] if h > 0 else np.full(cur.shape[0], -1, dtype=np.int64)
        use_ui = first_ui if h == 0 else then_ui
        edge = walker.step(rng, cur, prev, use_ui)
        ok = edge >= 0
        if not ok.all():
            alive = (np.arange(p) if isinstance(alive, slice) else alive)[ok]
            edge = edge[ok]
        nodes[alive, h + 1] = walker.neighbor[edge]
        rels[alive, h] = walker.relation[edge]
    return nodes, rels


# ---------------------------------------------------------------------------------- dedupe
def row_keys(columns: list[np.ndarray], bounds: list[int]) -> list[np.ndarray]:
    """Pack integer columns (values in ``[-1, bound-1]``) exactly into as few uint64 words as fit."""
    words, cur, used = [], np.zeros(columns[0].shape[0], dtype=np.uint64), 0
    for col, bound in zip(columns, bounds):
        bits = int(bound + 1).bit_length()
        if used + bits > 64:
            words.append(cur)
            cur, used = np.zeros(columns[0].shape[0], dtype=np.uint64), 0
        cur = (cur << np.uint64(bits)) | (col + 1).astype(np.uint64)
        used += bits
    words.append(cur)
    return words


def first_unique(nodes: np.ndarray, rels: np.ndarray, n_nodes: int, n_rel: int) -> np.ndarray:
    """Sorted indices of the first occurrence of every distinct (nodes, relations) row."""
    if nodes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    cols = [nodes[:, j] for j in range(nodes.shape[1])] + [rels[:, j] for j in range(rels.shape[1])]
    words = row_keys(cols, [n_nodes] * nodes.shape[1] + [n_rel] * rels.shape[1])
    if len(words) == 1:
        _, first = np.unique(words[0], return_index=True)
        return np.sort(first)
    order = np.lexsort(words[::-1])  # lexsort is stable: equal rows keep index order
    new = np.ones(order.shape[0], dtype=bool)
    same = np.ones(order.shape[0] - 1, dtype=bool)
    for w in words:
        same &= w[order[1:]] == w[order[:-1]]
    new[1:] = ~same
    return np.sort(order[new])


def group_sizes(columns: list[np.ndarray], bounds: list[int]) -> np.ndarray:
    """For every row, the number of rows with the same values in ``columns``."""
    n = columns[0].shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    words = row_keys(columns, bounds)
    order = np.argsort(words[0], kind="stable") if len(words) == 1 else np.lexsort(words[::-1])
    new = np.ones(n, dtype=bool)
    same = np.ones(n - 1, dtype=bool)
    for w in words:
        same &= w[order[1:]] == w[order[:-1]]
    new[1:] = ~same
    group = np.cumsum(new) - 1
    out = np.empty(n, dtype=np.int64)
    out[order] = np.bincount(group)[group]
    return out
