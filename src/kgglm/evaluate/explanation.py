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

import numpy as np

from kgglm.data.explanation_tables import ExplanationTables, lir_table, normalized_ema, sep_table  # noqa: F401

PATH_METRICS = ("lir", "sep", "etd", "lid", "sed", "ptd", "ptc", "ppt", "path_faithfulness", "kg_share")


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
    paths = np.asarray(recs.paths, dtype=np.int64)
    nodes, rels = vocab.token_node(paths[..., 0::2]), vocab.token_relation(paths[..., 1::2])
    return np.asarray(recs.users, dtype=np.int64), np.asarray(recs.items, dtype=np.int64), nodes, rels
