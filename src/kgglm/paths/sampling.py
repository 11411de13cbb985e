"""Path sampling over the collaborative graph: pre-training walks and user fine-tuning paths.

Everything is vectorised over *all* walks at once on the graph's CSR arrays: one NumPy call per
hop (plus a few rejection rounds), never a Python loop per path or per user. A single
``numpy.random.Generator`` drives every draw in a fixed order, so a seed gives the same paths on
any machine and with any number of threads.

Walk rules shared by both corpora:

* **No back-step.** A walk never steps straight back to the node it came from when the current node
  has another neighbour (in the allowed edge set). It does when that node is the only neighbour.
  Implemented as rejection (redraw the walks that went back) with an exact fallback for the few
  walks still going back after a few rounds.
* **Relation balance.** When both user-item (UI) edges and KG edges are allowed at a node, the walk
  first picks UI with probability ``ui_share`` (0.5) and KG otherwise, then an edge uniformly inside
  that group. Without this, popular items (hundreds of users, a dozen KG facts) would almost
  never lead into the KG. ``ui_share=None`` makes the choice uniform over all allowed edges.
* **Dead ends.** A node with no allowed edge ends the walk; the walk is kept (padded with ``-1``)
  when it has at least one hop (pre-training only; fine-tuning paths have a fixed length).

Fine-tuning path rule (``hop_length`` H, odd): ``U -ui-> I -> ... -> I'`` where ``I`` and ``I'`` are
distinct *training* items of ``U``; the H-1 hops in between follow the walk rules over KG edges, plus
UI edges when ``collaborative`` (so they may pass through other users), and the path is simple
(no node appears twice). Only the graph is walked, and the graph holds training interactions only,
so validation/test interactions never appear; both ends are also checked against ``train``.

Fine-tuning draw (``max_paths_per_user`` = cap): a user gets cap distinct paths, or all of its
paths when it has fewer, in the order a stream of walks would discover them. ``last_hop='walk'``
(the default, the paper's corpus): rounds of walks with rejection; a user stops when full or when
its valid walks keep repeating known paths (best effort: a rare path may be missed).
``last_hop='direct'``, 3 hops: every user whose path space is cheap to enumerate (the sum over its
item pairs of the smaller item degree is at most 256 x cap neighbour look-ups; on long-tailed data
most users) gets its paths enumerated exactly and cap of them drawn without replacement with
probability proportional to the direct walk's (Efraimidis-Spirakis keys: the same law as the first
cap distinct walks, up to the walk's rare exact back-step fallback), so it gets exactly
min(cap, its number of paths) paths and no walk is wasted on it; the other users (many items,
large path spaces, filled in a round or two) are walked as above. Cost: look-ups plus paths, in
batches of users (memory bounded by the batch), never a loop per user or per path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from kgglm.data.dataset import segments
from kgglm.data.graph import UI_RELATION, CollaborativeGraph

logger = logging.getLogger(__name__)

_BACKSTEP_ROUNDS = 3  # redraws before the exact (slower) fallback for walks that went back
_CHUNK_WALKS = 1 << 21  # fine-tuning walks generated per vectorised batch (bounds peak memory)
_MAX_USER_WALKS = 1 << 16  # fine-tuning walks per user and round, at most
LAST_HOPS = ("walk", "direct")
_SATURATION = 8  # a user whose valid walks repeat its known paths this often has no more to find
_EXACT_LOOKUPS_PER_PATH = 256  # last_hop='direct': enumerate a user exactly below cap x this many look-ups
_EXACT_CHUNK_LOOKUPS = 1 << 22  # neighbour look-ups per vectorised batch of exact users (bounds memory)


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
class _Walker:
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


def _walk(walker: _Walker, rng, starts: np.ndarray, hops: int, first_ui: bool, then_ui: bool):
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
def _row_keys(columns: list[np.ndarray], bounds: list[int]) -> list[np.ndarray]:
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


def _first_unique(nodes: np.ndarray, rels: np.ndarray, n_nodes: int, n_rel: int) -> np.ndarray:
    """Sorted indices of the first occurrence of every distinct (nodes, relations) row."""
    if nodes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    cols = [nodes[:, j] for j in range(nodes.shape[1])] + [rels[:, j] for j in range(rels.shape[1])]
    words = _row_keys(cols, [n_nodes] * nodes.shape[1] + [n_rel] * rels.shape[1])
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


# ---------------------------------------------------------------------------------- pre-training
def sample_pretrain_paths(
    graph: CollaborativeGraph,
    *,
    paths_per_node: int = 1,
    hop_range: tuple[int, int] = (3, 3),
    include_users: bool = False,
    seed: int,
    ui_share: float | None = 0.5,
) -> PathBatch:
    """Random walks over the KG, ``paths_per_node`` from every KG node (items and entities).

    Each walk's hop count is drawn uniformly from ``hop_range`` (inclusive). Only KG edges are
    walked unless ``include_users``, which also starts walks at users and allows UI edges. Nodes
    without an allowed edge start no walk. Duplicate paths are dropped (first occurrence kept).
    """
    lo_h, hi_h = int(hop_range[0]), int(hop_range[1])
    if not 1 <= lo_h <= hi_h:
        raise ValueError(f"hop_range must be (min, max) with 1 <= min <= max, got {hop_range!r}")
    if paths_per_node < 1:
        raise ValueError(f"paths_per_node must be >= 1, got {paths_per_node}")
    rng = np.random.default_rng(seed)
    walker = _Walker(graph, ui_share)
    degree = graph.degree() if include_users else walker.kg_degree()
    starts = np.repeat(np.flatnonzero(degree > 0).astype(np.int64), paths_per_node)
    nodes, rels = _walk(walker, rng, starts, hi_h, include_users, include_users)
    length = rng.integers(lo_h, hi_h + 1, size=starts.shape[0]) if hi_h > lo_h else None
    if length is not None:  # cut each walk to its drawn length
        cols = np.arange(hi_h)
        rels[cols[None, :] >= length[:, None]] = -1
        nodes[:, 1:][cols[None, :] >= length[:, None]] = -1
    keep = rels[:, 0] >= 0  # at least one hop
    nodes, rels = nodes[keep], rels[keep]
    first = _first_unique(nodes, rels, graph.n_nodes, graph.n_relations)
    logger.info("pretrain paths: %d walks from %d starts, %d distinct", keep.sum(), starts.size, first.size)
    return PathBatch(nodes[first], rels[first])


# ---------------------------------------------------------------------------------- fine-tuning
def sample_user_paths(
    graph: CollaborativeGraph,
    train,
    *,
    max_paths_per_user: int = 250,
    hop_length: int = 3,
    collaborative: bool = True,
    seed: int,
    ui_share: float | None = 0.5,
    max_rounds: int = 12,
    last_hop: str = "walk",
) -> PathBatch:
    """Up to ``max_paths_per_user`` distinct paths per user from the user to another training item.

    ``last_hop`` says how a path's final edge is drawn: ``"walk"`` (the default, the paper's
    corpus) continues the random walk and rejects walks that do not end on a training item of the
    user, so paths follow the walk's distribution conditioned on ending there; ``"direct"`` draws
    the final edge uniformly among the edges that do (:func:`_last_hop`): the same set of paths,
    weighted differently, and far faster on large sparse data sets, where rejection keeps a tiny
    share of the walks.

    See the module docstring for the path rule. Constrained random walks with rejection, in rounds
    over all users at once: each round draws for every unfinished user about as many walks as its
    observed acceptance rate says it needs, keeps the valid ones and drops duplicates. A user stops
    when full, or when its valid walks keep repeating known paths (few valid paths exist). With
    ``last_hop='direct'`` and 3 hops, users whose paths are cheap to enumerate skip the walks: all
    their paths are listed and cap of them drawn in the walk's law (:func:`_exact_user_paths`).
    Users with fewer than two training items get no path. Output is grouped by user, in order of
    discovery.
    """
    if hop_length < 3 or hop_length % 2 == 0:
        raise ValueError(f"hop_length must be odd and >= 3 (user -> item ... -> item), got {hop_length}")
    if last_hop not in LAST_HOPS:
        raise ValueError(f"last_hop must be one of {LAST_HOPS}, got {last_hop!r}")
    cap = int(max_paths_per_user)
    n_users, n_nodes, n_items = graph.n_users, graph.n_nodes, graph.n_items
    h1 = hop_length + 1
    rng = np.random.default_rng(seed)
    walker = _Walker(graph, ui_share)
    train_keys = np.unique(np.asarray(train.users, np.int64) * n_items + np.asarray(train.items, np.int64))
    n_train_items = np.bincount(train_keys // n_items, minlength=n_users)

    kept_nodes = np.zeros((0, h1), dtype=np.int64)
    kept_rels = np.zeros((0, hop_length), dtype=np.int64)
    have = np.zeros(n_users, dtype=np.int64)
    active = (n_train_items >= 2) & (graph.degree()[:n_users] > 0) & (cap > 0)
    exact_nodes, exact_rels = kept_nodes, kept_rels
    if last_hop == "direct" and hop_length == 3:  # users cheap to enumerate: all their paths, exactly
        cost = _exact_cost(walker, train_keys // n_items, train_keys % n_items + n_users, n_users)
        exact = np.flatnonzero(active & (cost <= _EXACT_LOOKUPS_PER_PATH * cap))
        exact_nodes, exact_rels = _exact_user_paths(walker, rng, exact, cost[exact], cap, collaborative,
                                                    train_keys, n_items)
        active[exact] = False
        logger.debug("user paths: %d users enumerated exactly, %d paths", exact.size, exact_nodes.shape[0])
    # prior guess, replaced by the observed rate after round 1; high when the last hop is drawn
    # among valid edges (at 0.25, round 0 alone walked 91M walks at Amazon-book size)
    acceptance = np.full(n_users, 0.75 if last_hop == "direct" else 0.25)
    last_walks = np.full(n_users, min(4 * cap + 16, _MAX_USER_WALKS // 16))  # grows <= 4x per round
    min_tries = min(max(8 * cap, 256), _MAX_USER_WALKS)  # stop a user on this many fruitless walks
    for rnd in range(max_rounds):
        users = np.flatnonzero(active)
        if users.size == 0:
            break
        need = cap - have[users]
        n_walks = np.ceil(need / np.maximum(acceptance[users], 1e-3) * 1.3).astype(np.int64)
        n_walks = np.clip(n_walks, 16, np.minimum(4 * last_walks[users], _MAX_USER_WALKS))
        last_walks[users] = n_walks
        starts = np.repeat(users, n_walks)
        pieces_n, pieces_r = [], []
        for c in range(0, starts.size, _CHUNK_WALKS):
            walks = _user_walks if last_hop == "direct" else _user_walks_rejection
            nodes, rels = walks(walker, rng, starts[c:c + _CHUNK_WALKS], hop_length, collaborative, train_keys,
                                n_items)
            pieces_n.append(nodes)
            pieces_r.append(rels)
        all_n = np.concatenate([kept_nodes] + pieces_n)
        all_r = np.concatenate([kept_rels] + pieces_r)
        first = _first_unique(all_n, all_r, n_nodes, graph.n_relations)  # old rows come first
        all_n, all_r = all_n[first], all_r[first]
        order = np.argsort(all_n[:, 0], kind="stable")  # group by user, discovery order within
        all_n, all_r = all_n[order], all_r[order]
        count = np.bincount(all_n[:, 0], minlength=n_users)
        rank = np.arange(all_n.shape[0]) - np.repeat(np.cumsum(count) - count, count)
        keep = rank < cap
        kept_nodes, kept_rels = all_n[keep], all_r[keep]
        new_have = np.minimum(count, cap)
        gained = new_have[users] - have[users]
        have = new_have
        acceptance[users] = np.maximum(gained / n_walks, 1e-3)
        # Saturated: the round's valid walks hit the known paths SATURATION times each on average
        # (yet the user is not full), or enough walks found nothing new. Best effort, not a proof.
        valid = np.bincount(np.concatenate([x[:, 0] for x in pieces_n]), minlength=n_users)[users]
        saturated = (have[users] > 0) & (valid >= _SATURATION * have[users])
        saturated |= (gained == 0) & (n_walks >= min_tries)
        active[users] = (have[users] < cap) & ~saturated
        logger.debug("user paths round %d: %d walks, %d paths, %d users active",
                  rnd, starts.size, kept_nodes.shape[0], active.sum())
    if exact_nodes.shape[0]:  # merge, grouped by user (each part keeps its order)
        kept_nodes = np.concatenate([exact_nodes, kept_nodes])
        kept_rels = np.concatenate([exact_rels, kept_rels])
        order = np.argsort(kept_nodes[:, 0], kind="stable")
        kept_nodes, kept_rels = kept_nodes[order], kept_rels[order]
        have = np.bincount(kept_nodes[:, 0], minlength=n_users)
    logger.info("user paths: %d paths for %d users (%d full)", kept_nodes.shape[0], (have > 0).sum(),
             (have >= cap).sum())
    return PathBatch(kept_nodes, kept_rels)


def _user_walks_rejection(walker: _Walker, rng, starts, hop_length, collaborative, train_keys, n_items):
    """Walk ``hop_length`` hops from users and keep the valid fine-tuning paths (``last_hop='walk'``).

    Cheap structural checks run first so the binary searches only see the survivors.
    """
    n_users = walker.graph.n_users
    nodes, rels = _walk(walker, rng, starts, hop_length, True, collaborative)
    ok = (rels[:, -1] >= 0) & (rels[:, 0] == UI_RELATION)  # full length, starts with a UI hop
    ok &= (nodes[:, -1] >= n_users) & (nodes[:, -1] < n_users + n_items)  # ends at an item
    for i in range(nodes.shape[1]):  # simple path: no node twice (also gives I' != I)
        for j in range(i + 1, nodes.shape[1]):
            ok &= nodes[:, i] != nodes[:, j]
    nodes, rels = nodes[ok], rels[ok]
    for col in (-1, 1):  # both ends are training items of the user (the last one rejects most)
        key = nodes[:, 0] * n_items + (nodes[:, col] - n_users)
        pos = np.minimum(np.searchsorted(train_keys, key), train_keys.size - 1)
        ok = train_keys[pos] == key
        nodes, rels = nodes[ok], rels[ok]
    return nodes, rels


def _user_walks(walker: _Walker, rng, starts, hop_length, collaborative, train_keys, n_items):
    """Walk from users and keep the valid fine-tuning paths (see module docstring).

    The first ``hop_length - 1`` hops are random walks; the last hop is drawn uniformly among the
    edges from the walk's last node to a training item of its user that is not on the path yet
    (:func:`_last_hop`), instead of a uniform edge followed by rejection. At Amazon-book size (25k
    items, ~10 training items per user) rejection kept 0.2% of the walks and round 0 alone took
    minutes; drawing the last hop among the valid edges keeps every walk that can be completed.
    The set of reachable paths is unchanged (a path is still a walk whose hops are graph edges).
    """
    n_users = walker.graph.n_users
    nodes, rels = _walk(walker, rng, starts, hop_length - 1, True, collaborative)
    ok = (rels[:, -1] >= 0) & (rels[:, 0] == UI_RELATION)  # full length so far, starts with a UI hop
    for i in range(nodes.shape[1]):  # simple so far: no node twice
        for j in range(i + 1, nodes.shape[1]):
            ok &= nodes[:, i] != nodes[:, j]
    nodes, rels = nodes[ok], rels[ok]
    key = nodes[:, 0] * n_items + (nodes[:, 1] - n_users)  # the first item is a training item of the user
    pos = np.minimum(np.searchsorted(train_keys, key), train_keys.size - 1)
    ok = train_keys[pos] == key
    nodes, rels = nodes[ok], rels[ok]
    walk, edge = _last_hop(walker, rng, nodes, collaborative, train_keys, n_items)
    nodes = np.concatenate([nodes[walk], walker.neighbor[edge][:, None]], axis=1)
    rels = np.concatenate([rels[walk], walker.relation[edge][:, None]], axis=1)
    return nodes, rels


def _last_hop(walker: _Walker, rng, nodes, collaborative, train_keys, n_items):
    """One uniform final edge per walk from ``nodes[:, -1]`` (X) to a training item of ``nodes[:, 0]``
    (U) not on the path; returns (walk index, edge index) for the walks that have one.

    The candidates are enumerated from the smaller side, per walk: U's training items (then the
    edges X-item, found in the graph's edges sorted by (src, dst)) when U has fewer items than X
    has edges, else X's edges (then a membership test in the sorted training keys). Either way the
    work per walk is min(items of U, degree of X), never a hub's full degree for a small user.
    """
    g = walker.graph
    n_users = g.n_users
    walker.index_pairs(train_keys, n_items)
    u, x = nodes[:, 0], nodes[:, -1]
    lo_x = walker.start[x] if collaborative else walker.ui_end[x]
    deg_x = walker.end[x] - lo_x
    lo_u = walker.train_indptr[u]
    d_u = walker.train_indptr[u + 1] - lo_u
    from_user = d_u <= deg_x
    # side A: the user's items, then every edge X -> item (several relations possible); walks in
    # order of X, so the binary searches of one X stay in its row (cache), 4x faster on large graphs
    wa = np.flatnonzero(from_user)
    wa = wa[np.argsort(x[wa], kind="stable")]
    seg, pos = segments(lo_u[wa], d_u[wa])
    left, count = walker.find_pairs(x[wa][seg], train_keys[pos] % n_items + n_users)
    seg2, epos = segments(left, count)
    walk_a, edge_a = wa[seg[seg2]], walker.pair_order[epos]
    if not collaborative:
        keep = walker.relation[edge_a] != UI_RELATION
        walk_a, edge_a = walk_a[keep], edge_a[keep]
    # side B: X's edges, then is the neighbour a training item of the user
    wb = np.flatnonzero(~from_user)
    seg, edge_b = segments(lo_x[wb], deg_x[wb])
    dst = walker.neighbor[edge_b]
    is_item = (dst >= n_users) & (dst < n_users + n_items)
    key = u[wb][seg] * n_items + (dst - n_users)
    pos = np.minimum(np.searchsorted(train_keys, key), train_keys.size - 1)
    keep = is_item & (train_keys[pos] == key)
    walk_b, edge_b = wb[seg[keep]], edge_b[keep]
    walk, edge = np.concatenate([walk_a, walk_b]), np.concatenate([edge_a, edge_b])
    dst = walker.neighbor[edge]
    ok = np.ones(walk.shape[0], dtype=bool)
    for j in range(nodes.shape[1]):  # simple path: the item is not on the path yet
        ok &= dst != nodes[walk, j]
    walk, edge = walk[ok], edge[ok]
    # uniform choice per walk: the candidate with the largest random priority
    order = np.lexsort((rng.random(walk.shape[0]), walk))
    last = np.ones(order.shape[0], dtype=bool)
    last[:-1] = walk[order[1:]] != walk[order[:-1]]
    chosen = order[last]
    return walk[chosen], edge[chosen]


# ---------------------------------------------------------------------------------- exact paths
def _first_hop_probs(walker: _Walker, nodes: np.ndarray, collaborative: bool) -> tuple[np.ndarray, np.ndarray]:
    """Probability of each UI edge and of each KG edge out of item ``nodes`` on a walk's second hop,
    given the walk came from one of the item's users (the back-step to that user is rejected, which
    conditions the draw of :meth:`_Walker._draw` on not going back). 0 where no such edge exists."""
    n_ui = (walker.ui_end[nodes] - walker.start[nodes]).astype(np.float64)
    n_kg = (walker.end[nodes] - walker.ui_end[nodes]).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if not collaborative:  # KG edges only, uniform; the user is not among them
            return np.zeros_like(n_kg), np.where(n_kg > 0, 1.0 / n_kg, 0.0)
        if walker.ui_share is None:  # uniform over all edges but the one back to the user
            q = np.where(n_ui + n_kg > 1, 1.0 / (n_ui + n_kg - 1), 0.0)
            return q, q
        share = walker.ui_share
        p_ui = np.where(n_ui > 0, np.where(n_kg > 0, share, 1.0) / n_ui, 0.0)
        p_kg = np.where(n_kg > 0, np.where(n_ui > 0, 1.0 - share, 1.0) / n_kg, 0.0)
        keep = 1.0 - p_ui  # the user is one of the n_ui UI neighbours
        ok = keep > 0
        return np.where(ok, p_ui / keep, 0.0), np.where(ok, p_kg / keep, 0.0)


def _group_sizes(columns: list[np.ndarray], bounds: list[int]) -> np.ndarray:
    """For every row, the number of rows with the same values in ``columns``."""
    n = columns[0].shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    words = _row_keys(columns, bounds)
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


def _exact_cost(walker: _Walker, users: np.ndarray, items: np.ndarray, n_users: int) -> np.ndarray:
    """Neighbour look-ups :func:`_exact_user_paths` makes per user: the sum over its item pairs
    of the smaller degree, from one sort (the k-th smallest degree is the smaller one in s-1-k pairs).
    ``users``/``items``: one row per training item, grouped by user."""
    deg = walker.end[items] - walker.start[items]
    order = np.lexsort((deg, users))
    count = np.bincount(users, minlength=n_users)
    rank = segments(np.zeros_like(count), count)[1]  # position within the user's items
    return np.bincount(users[order], weights=deg[order] * (count[users[order]] - 1 - rank), minlength=n_users)


def _exact_user_paths(walker: _Walker, rng, users: np.ndarray, cost: np.ndarray, cap: int, collaborative: bool,
                      train_keys: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Every 3-hop path of ``users`` (all of them, exactly), then ``cap`` of them per user drawn
    the way ``last_hop='direct'`` walks would find them (see :func:`sample_user_paths`).

    Paths ``U -ui-> I -> X -> I'`` for each pair {I, I'} of U's training items: X runs over the
    allowed neighbours of the item with the smaller degree, the edges X - other item are found by
    binary search in the (src, dst)-sorted edges (distinct pairs once per chunk of users). A path's
    probability under the direct walk is ``q(I, edge 1) / completions(U, I, X)`` up to a per-user
    constant (:func:`_first_hop_probs`; the last hop is uniform over the completions), and keeping
    the ``cap`` largest ``log(u) / p`` (Efraimidis-Spirakis) draws them in the same law as the first
    ``cap`` distinct paths of an endless stream of walks: sampling without replacement proportional
    to ``p``. Rows come out grouped by user, in that draw order.
    """
    g = walker.graph
    n_users, n_nodes, n_rel = g.n_users, g.n_nodes, g.n_relations
    walker.index_pairs(train_keys, n_items)
    pk, po, tptr = walker.pair_keys, walker.pair_order, walker.train_indptr
    deg = walker.end - walker.start  # pair-sorted rows hold every edge; KG-only walks filter them
    s = tptr[users + 1] - tptr[users]
    # a path starts with a graph edge user -> first item (always, unless train is not the graph's)
    t_first = walker.find_pairs(train_keys // n_items, train_keys % n_items + n_users)[1] > 0
    out_n, out_r = [], []
    bounds = np.searchsorted(np.cumsum(cost), np.arange(0, cost.sum(), _EXACT_CHUNK_LOOKUPS), side="right")
    bounds = np.unique(np.concatenate([bounds, [0, users.size]]))
    for c0, c1 in zip(bounds[:-1], bounds[1:]):
        cu = users[c0:c1]
        cs = s[c0:c1]
        # ---- the users' item pairs (a < b in each user's item list)
        sq = cs * cs
        local, k = segments(np.zeros_like(sq), sq)  # local user index, index in its s x s grid
        base, side = tptr[cu][local], cs[local]
        a, b = k // side, k % side
        m = a < b
        pu = local[m]
        ia = train_keys[base[m] + a[m]] % n_items + n_users
        ib = train_keys[base[m] + b[m]] % n_items + n_users
        fa, fb = t_first[base[m] + a[m]], t_first[base[m] + b[m]]
        swap = deg[ib] < deg[ia]
        small, other = np.where(swap, ib, ia), np.where(swap, ia, ib)
        f_small, f_other = np.where(swap, fb, fa), np.where(swap, fa, fb)
        # ---- connections small - X - other of the distinct pairs (ordered by other, small: sorted look-ups)
        pkey = other * n_nodes + small
        order = np.argsort(pkey, kind="stable")
        new = np.ones(pkey.size, dtype=bool)
        new[1:] = pkey[order[1:]] != pkey[order[:-1]]
        pair_of = np.empty(pkey.size, dtype=np.int64)
        pair_of[order] = np.cumsum(new) - 1  # user pair -> distinct pair
        d_small, d_other = small[order[new]], other[order[new]]
        seg, pos = segments(g.indptr[d_small], deg[d_small])
        x = pk[pos] % n_nodes
        e_s = po[pos]  # edge small -> X
        lo, cnt = walker.find_pairs(d_other[seg], x)  # edges other -> X (same relation as X -> other)
        seg2, qpos = segments(lo, cnt)
        c_pair, c_x = seg[seg2], x[seg2]
        c_rs, c_ro = g.relation[e_s[seg2]], g.relation[po[qpos]]
        keep = (c_x != d_small[c_pair]) & (c_x != d_other[c_pair])
        if not collaborative:
            keep &= (c_rs != UI_RELATION) & (c_ro != UI_RELATION)
        c_pair, c_x, c_rs, c_ro = c_pair[keep], c_x[keep], c_rs[keep], c_ro[keep]
        c_count = np.bincount(c_pair, minlength=d_small.size)
        # ---- every user pair gets its pair's connections, in both directions
        seg3, cpos = segments(np.cumsum(c_count)[pair_of] - c_count[pair_of], c_count[pair_of])
        user = cu[pu[seg3]]
        x = c_x[cpos]
        keep = x != user  # simple path: the middle node is not the user itself
        seg3, cpos, user, x = seg3[keep], cpos[keep], user[keep], x[keep]
        sm, ot = d_small[c_pair[cpos]], d_other[c_pair[cpos]]
        rs, ro = c_rs[cpos], c_ro[cpos]
        ok = np.concatenate([f_small[seg3], f_other[seg3]])
        first = np.concatenate([sm, ot])[ok]
        nodes = np.stack([np.concatenate([user, user])[ok], first, np.concatenate([x, x])[ok],
                          np.concatenate([ot, sm])[ok]], axis=1)
        rels = np.stack([np.full(first.size, UI_RELATION, dtype=np.int64), np.concatenate([rs, ro])[ok],
                         np.concatenate([ro, rs])[ok]], axis=1)
        # ---- walk probabilities and the draw without replacement
        q_ui, q_kg = _first_hop_probs(walker, nodes[:, 1], collaborative)
        q = np.where(rels[:, 1] == UI_RELATION, q_ui, q_kg)
        completions = _group_sizes([nodes[:, 0] - cu[0], nodes[:, 1], rels[:, 1], nodes[:, 2]],
                                   [int(cu[-1] - cu[0]) + 1, n_nodes, n_rel, n_nodes])
        key = np.log1p(-rng.random(nodes.shape[0])) / (q / completions)
        order = np.lexsort((-key, nodes[:, 0]))
        count = np.bincount(nodes[:, 0] - cu[0], minlength=cu.size)
        rank = segments(np.zeros_like(count), count)[1]  # position in the user's draw order
        order = order[rank < cap]
        out_n.append(nodes[order])
        out_r.append(rels[order])
    if not out_n:
        return np.zeros((0, 4), dtype=np.int64), np.zeros((0, 3), dtype=np.int64)
    return np.concatenate(out_n), np.concatenate(out_r)
