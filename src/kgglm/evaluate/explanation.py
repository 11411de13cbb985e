r"""Explanation-path quality of explained top-k lists (pure functions over arrays, no decoding).

Input, per evaluated user row ``u``: ``users [U]`` (user index), ``items [U, K]`` (item index,
``-1`` = missing), ``path_nodes [U, K, H+1]`` (node ids, see :mod:`kgglm.data.graph`) and
``path_rels [U, K, H]`` (relation ids, ``0`` = user-item). A path is
``user -r0-> l -r1-> ... -> s -rH-> item``: ``l = path_nodes[..., 1]`` is the *linking
interaction* (a training item of the user), ``s = path_nodes[..., H-1]`` the *shared entity*
(the node just before the recommended item, as hopwise's ``path[-2]``; a user for a
collaborative path) and ``rH = path_rels[..., H-1]`` the *path type* (the relation of the last
hop, as in both papers' code). A row entry is *explained* when its item and every node and
relation of its path are ``>= 0``; ``n_u`` is the number of explained entries of row ``u``.

Every metric is computed per user and averaged over users. ``fidelity`` averages over all
rows; the path-quality metrics average over rows with ``n_u > 0`` (a row without any path has no
explanation quality to measure; its absence is what ``fidelity`` reports) and are ``nan`` when
no row has one.

Metrics (sources: Balloccu et al. SIGIR 2022 "Post Processing Recommender Systems with Knowledge
Graphs for Recency, Popularity, and Diversity of Explanations"; ECIR 2023 "Reinforcement
recommendation reasoning through knowledge graphs for explanation path quality"; PEARLM 2024):

* ``lir``   mean LIR(u, l) of the linking interactions (table below; 0 when ``(u, l)`` is not a
  training interaction).
* ``sep``   mean SEP(s) of the shared entities (table below).
* ``etd``   |distinct path types| / min(k, T), T = ``dataset.n_relations`` (SIGIR 2022 ETD).
* ``ptd``   |distinct path types| / min(n_u, T) (ECIR 2023 PTD).
* ``lid``   |distinct linking interactions| / n_u.
* ``sed``   |distinct shared entities| / n_u.
* ``ptc``   1 - sum_t n_t (n_t - 1) / (n_u (n_u - 1)), n_t = paths of type t (Simpson
  diversity of path types; 0 when n_u <= 1), as the ECIR 2023 code.
* ``ppt``   |distinct relation sequences r0..rH| / min(n_u, P), P = T^(H-1) (the sequences after
  the fixed user-item hop; P >= k in practice, so this is patterns per explained path).
* ``fidelity``  n_u / k.
* ``path_faithfulness``  share of explained paths whose every hop ``a -r-> b`` is an edge of the
  training graph (PEARLM).
* ``kg_share``  share of explained paths with a KG entity (not user, not item) strictly inside.
* ``relation_share``  {relation name: share of explained paths using it in hops 1..H-1}.

LIR and SEP tables — one definition, the timestamp/degree-valued EMA of the ECIR 2023 code and
hopwise 0.9.1 (the SIGIR 2022 code instead smoothed the *ranks* 0..n-1 with span 10). For a
sequence sorted ascending, ``v_0 <= ... <= v_{n-1}`` (a user's training timestamps for LIR; the
degrees of the users, or of the items and entities together, for SEP):

    EMA_t = sum_{j<=t} (1-a)^(t-j) v_j / sum_{j<=t} (1-a)^(t-j),   a = 2 / (n + 1)

(pandas ``ewm(span=n, adjust=True)``), then min-max normalised over the sequence to [0, 1]:
1 = most recent / most popular. A constant sequence is replaced by its ranks 0..n-1 first (as
hopwise), a sequence of one gets 0 (hopwise's NaN, stored as 0). Ties: equal values all get the
mean of the normalised EMA over the positions they occupy — the expected value under hopwise's
arbitrary tie order, and independent of row order. SEP uses ``graph.degree()`` (training
user-item edges included, duplicates stored once); nodes of degree 0 get 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kgglm.data.graph import CollaborativeGraph

PATH_METRICS = ("lir", "sep", "etd", "lid", "sed", "ptd", "ptc", "ppt", "path_faithfulness", "kg_share")


# ----------------------------------------------------------------------------------- tables
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


# ----------------------------------------------------------------------------------- metrics
def _distinct_per_row(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Number of distinct non-negative ``values`` per row among the ``mask``-ed entries."""
    v = np.sort(np.where(mask, values, -1), axis=1)
    new = v >= 0
    new[:, 1:] &= v[:, 1:] != v[:, :-1]
    return new.sum(axis=1)


def _row_mean(per_path: np.ndarray, mask: np.ndarray, n: np.ndarray) -> np.ndarray:
    return np.where(mask, per_path, 0.0).sum(axis=1) / np.maximum(n, 1)


def explanation_metrics(dataset, users: np.ndarray, items: np.ndarray, path_nodes: np.ndarray,
                        path_rels: np.ndarray, *, k: int | None = None,
                        tables: ExplanationTables | None = None) -> dict:
    """Explanation-quality metrics of explained top-k lists (definitions: module docstring).

    Args:
        dataset: a :class:`kgglm.data.Dataset` (training split, graph, relation names).
        users, items, path_nodes, path_rels: see the module docstring; ``H >= 2``.
        k: the cut-off; default ``items.shape[1]``. Columns past ``k`` are ignored; when ``k`` is
            larger than the lists, the missing ranks count as unexplained.
        tables: :class:`ExplanationTables` of ``dataset``, to reuse across calls.

    Returns: ``{metric: float}`` for ``fidelity`` and :data:`PATH_METRICS`, plus
    ``relation_share: {relation name: float}`` (only relations that occur).
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    nodes = np.asarray(path_nodes, dtype=np.int64)
    rels = np.asarray(path_rels, dtype=np.int64)
    n_rows, width = items.shape
    if users.shape != (n_rows,) or nodes.shape[:2] != (n_rows, width) or rels.shape[:2] != (n_rows, width):
        raise ValueError(f"inconsistent shapes: users {users.shape}, items {items.shape}, "
                         f"path_nodes {nodes.shape}, path_rels {rels.shape}")
    hops = rels.shape[2]
    if nodes.shape[2] != hops + 1 or hops < 2:
        raise ValueError(f"path_nodes must have H+1 = path_rels' H+1 columns with H >= 2, got "
                         f"{nodes.shape[2]} and {hops}")
    k = width if k is None else int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    items, nodes, rels = items[:, :k], nodes[:, :k], rels[:, :k]
    tables = tables or ExplanationTables.from_dataset(dataset)
    graph = tables.graph
    n_types = len(tables.relation_names)

    mask = (items >= 0) & (nodes >= 0).all(axis=2) & (rels >= 0).all(axis=2)
    n = mask.sum(axis=1)
    has = n > 0
    out: dict = {"fidelity": float((n / k).mean()) if n_rows else 0.0}
    if not has.any():
        out.update({m: float("nan") for m in PATH_METRICS})
        out["relation_share"] = {}
        return out

    linked, shared, ptype = nodes[..., 1], nodes[..., hops - 1], rels[..., hops - 1]
    per_user: dict[str, np.ndarray] = {}
    linked_item = np.where((linked >= graph.n_users) & (linked < graph.entity_offset), linked - graph.n_users, -1)
    per_user["lir"] = _row_mean(tables.lir(users[:, None], linked_item), mask, n)
    per_user["sep"] = _row_mean(tables.sep[np.clip(shared, 0, graph.n_nodes - 1)], mask, n)
    n_distinct_types = _distinct_per_row(ptype, mask)
    per_user["etd"] = n_distinct_types / min(k, n_types)
    per_user["ptd"] = n_distinct_types / np.maximum(np.minimum(n, n_types), 1)
    per_user["lid"] = _distinct_per_row(linked, mask) / np.maximum(n, 1)
    per_user["sed"] = _distinct_per_row(shared, mask) / np.maximum(n, 1)
    # Simpson: ordered pairs of distinct explained paths with the same type
    same = (ptype[:, :, None] == ptype[:, None, :]) & mask[:, :, None] & mask[:, None, :]
    pairs = same.sum(axis=(1, 2)) - n
    per_user["ptc"] = np.where(n > 1, 1.0 - pairs / np.maximum(n * (n - 1), 1), 0.0)
    if hops * np.log2(max(n_types, 2)) >= 62:
        raise ValueError(f"{n_types} relations ^ {hops} hops do not fit a pattern code")
    code = np.zeros(items.shape, dtype=np.int64)
    for h in range(hops):  # relation sequence r0..rH as one integer (base n_types)
        code = code * n_types + np.maximum(rels[..., h], 0)
    n_patterns = float(n_types) ** (hops - 1)
    per_user["ppt"] = _distinct_per_row(code, mask) / np.maximum(np.minimum(n, n_patterns), 1)
    faithful = graph.has_edge(nodes[..., :-1], rels, nodes[..., 1:]).all(axis=2)
    per_user["path_faithfulness"] = _row_mean(faithful, mask, n)
    per_user["kg_share"] = _row_mean((nodes[..., 1:hops] >= graph.entity_offset).any(axis=2), mask, n)
    for m in PATH_METRICS:
        out[m] = float(per_user[m][has].mean())
    if not tables.has_timestamps:  # no training timestamps: recency is undefined
        out["lir"] = float("nan")

    # relation_share: membership of each relation in hops 1..H-1, per path, then per user
    member = np.zeros((n_rows, k, n_types), dtype=bool)
    rows, cols = np.nonzero(mask)
    for h in range(1, hops):
        member[rows, cols, rels[rows, cols, h]] = True
    share = member.sum(axis=1)[has] / n[has, None]
    mean_share = share.mean(axis=0)
    out["relation_share"] = {str(tables.relation_names[r]): float(mean_share[r])
                             for r in np.flatnonzero(member.any(axis=(0, 1)))}
    return out


def explanation_arrays(recs, vocab) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(users, items, path_nodes, path_rels)`` of :class:`kgglm.decode.recommend.Recommendations`
    (token ids ``U r1 n1 ... rH item``); special tokens such as ``[PAD]`` become ``-1``."""
    from kgglm.paths.vocab import RELATION_OFFSET

    paths = np.asarray(recs.paths, dtype=np.int64)
    nodes = paths[..., 0::2] - vocab.node_offset
    rels = paths[..., 1::2] - RELATION_OFFSET
    nodes = np.where((paths[..., 0::2] >= vocab.node_offset) & (paths[..., 0::2] < vocab.size), nodes, -1)
    rels = np.where((rels >= 0) & (paths[..., 1::2] < vocab.node_offset), rels, -1)
    return np.asarray(recs.users, dtype=np.int64), np.asarray(recs.items, dtype=np.int64), nodes, rels
