"""Fine-tuning paths: up to cap distinct paths per user from one training item to another.

The path rule and the two draws (``last_hop='walk'``: rounds of walks with rejection;
``last_hop='direct'``: the last hop drawn among the edges that complete the path, and users cheap to
enumerate listed exactly by :mod:`kgglm.paths.exact_paths`) are in the :mod:`kgglm.paths.sampling`
docstring. Everything is vectorised over all walks of a round.
"""

from __future__ import annotations

import logging

import numpy as np

from kgglm.data.dataset import segments
from kgglm.data.graph import UI_RELATION, CollaborativeGraph
from kgglm.paths.exact_paths import exact_cost, exact_user_paths
from kgglm.paths.walker import PathBatch, Walker, first_unique, walk

logger = logging.getLogger("kgglm.paths.sampling")  # the samplers log as one component

_CHUNK_WALKS = 1 << 21  # fine-tuning walks generated per vectorised batch (bounds peak memory)
_MAX_USER_WALKS = 1 << 16  # fine-tuning walks per user and round, at most
LAST_HOPS = ("walk", "direct")
_SATURATION = 8  # a user whose valid walks repeat its known paths this often has no more to find
_EXACT_LOOKUPS_PER_PATH = 256  # last_hop='direct': enumerate a user exactly below cap x this many look-ups


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

    See the :mod:`kgglm.paths.sampling` docstring for the path rule. Constrained random walks with
    rejection, in rounds over all users at once: each round draws for every unfinished user about as
    many walks as its observed acceptance rate says it needs, keeps the valid ones and drops
    duplicates. A user stops when full, or when its valid walks keep repeating known paths (few
    valid paths exist). With ``last_hop='direct'`` and 3 hops, users whose paths are cheap to
    enumerate skip the walks: all their paths are listed and cap of them drawn in the walk's law
    (:func:`kgglm.paths.exact_paths.exact_user_paths`). Users with fewer than two training items get
    no path. Output is grouped by user, in order of discovery.
    """
    if hop_length < 3 or hop_length % 2 == 0:
        raise ValueError(f"hop_length must be odd and >= 3 (user -> item ... -> item), got {hop_length}")
    if last_hop not in LAST_HOPS:
        raise ValueError(f"last_hop must be one of {LAST_HOPS}, got {last_hop!r}")
    cap = int(max_paths_per_user)
    n_users, n_items = graph.n_users, graph.n_items
    rng = np.random.default_rng(seed)
    walker = Walker(graph, ui_share)
    train_keys = np.unique(np.asarray(train.users, np.int64) * n_items + np.asarray(train.items, np.int64))
    n_train_items = np.bincount(train_keys // n_items, minlength=n_users)
    active = (n_train_items >= 2) & (graph.degree()[:n_users] > 0) & (cap > 0)
    exact_nodes = np.zeros((0, hop_length + 1), dtype=np.int64)
    exact_rels = np.zeros((0, hop_length), dtype=np.int64)
    if last_hop == "direct" and hop_length == 3:  # users cheap to enumerate: all their paths, exactly
        cost = exact_cost(walker, train_keys // n_items, train_keys % n_items + n_users, n_users)
        exact = np.flatnonzero(active & (cost <= _EXACT_LOOKUPS_PER_PATH * cap))
        exact_nodes, exact_rels = exact_user_paths(walker, rng, exact, cost[exact], cap, collaborative,
                                                   train_keys, n_items)
        active[exact] = False
        logger.debug("user paths: %d users enumerated exactly, %d paths", exact.size, exact_nodes.shape[0])
    kept_nodes, kept_rels, have = _walk_rounds(walker, rng, active, cap, hop_length, collaborative, train_keys,
                                               last_hop, max_rounds)
    if exact_nodes.shape[0]:  # merge, grouped by user (each part keeps its order)
        kept_nodes = np.concatenate([exact_nodes, kept_nodes])
        kept_rels = np.concatenate([exact_rels, kept_rels])
        order = np.argsort(kept_nodes[:, 0], kind="stable")
        kept_nodes, kept_rels = kept_nodes[order], kept_rels[order]
        have = np.bincount(kept_nodes[:, 0], minlength=n_users)
    logger.info("user paths: %d paths for %d users (%d full)", kept_nodes.shape[0], (have > 0).sum(),
                (have >= cap).sum())
    return PathBatch(kept_nodes, kept_rels)


def _walk_rounds(walker: Walker, rng, active: np.ndarray, cap: int, hop_length: int, collaborative: bool,
                 train_keys: np.ndarray, last_hop: str, max_rounds: int):
    """The rounds of walks for the ``active`` users (updated in place): ``(nodes, relations, paths
    per user)``, grouped by user in discovery order."""
    graph = walker.graph
    n_users, n_items = graph.n_users, graph.n_items
    kept_nodes = np.zeros((0, hop_length + 1), dtype=np.int64)
    kept_rels = np.zeros((0, hop_length), dtype=np.int64)
    have = np.zeros(n_users, dtype=np.int64)
    # prior guess, replaced by the observed rate after round 1; high when the last hop is drawn
    # among valid edges (at 0.25, round 0 alone walked 91M walks at Amazon-book size)
    acceptance = np.full(n_users, 0.75 if last_hop == "direct" else 0.25)
    last_walks = np.full(n_users, min(4 * cap + 16, _MAX_USER_WALKS // 16))  # grows <= 4x per round
    min_tries = min(max(8 * cap, 256), _MAX_USER_WALKS)  # stop a user on this many fruitless walks
    walks = _user_walks if last_hop == "direct" else _user_walks_rejection
    for rnd in range(max_rounds):
        users = np.flatnonzero(active)
        if users.size == 0:
            break
        need = cap - have[users]
        n_walks = np.ceil(need / np.maximum(acceptance[users], 1e-3) * 1.3).astype(np.int64)
        n_walks = np.clip(n_walks, 16, np.minimum(4 * last_walks[users], _MAX_USER_WALKS))
        last_walks[users] = n_walks
        starts = np.repeat(users, n_walks)
        pieces = [walks(walker, rng, starts[c:c + _CHUNK_WALKS], hop_length, collaborative, train_keys, n_items)
                  for c in range(0, starts.size, _CHUNK_WALKS)]
        kept_nodes, kept_rels, count = _keep_first(kept_nodes, kept_rels, pieces, cap, graph)
        new_have = np.minimum(count, cap)
        gained = new_have[users] - have[users]
        have = new_have
        acceptance[users] = np.maximum(gained / n_walks, 1e-3)
        # Saturated: the round's valid walks hit the known paths SATURATION times each on average
        # (yet the user is not full), or enough walks found nothing new. Best effort, not a proof.
        valid = np.bincount(np.concatenate([x[0][:, 0] for x in pieces]), minlength=n_users)[users]
        saturated = (have[users] > 0) & (valid >= _SATURATION * have[users])
        saturated |= (gained == 0) & (n_walks >= min_tries)
        active[users] = (have[users] < cap) & ~saturated
        logger.debug("user paths round %d: %d walks, %d paths, %d users active",
                     rnd, starts.size, kept_nodes.shape[0], active.sum())
    return kept_nodes, kept_rels, have


def _keep_first(kept_nodes: np.ndarray, kept_rels: np.ndarray, pieces: list, cap: int, graph: CollaborativeGraph):
    """The known paths plus the round's new ones (``pieces``: ``(nodes, rels)`` chunks), distinct,
    grouped by user in discovery order and cut at ``cap`` per user; with each user's distinct count."""
    all_n = np.concatenate([kept_nodes] + [p[0] for p in pieces])
    all_r = np.concatenate([kept_rels] + [p[1] for p in pieces])
    first = first_unique(all_n, all_r, graph.n_nodes, graph.n_relations)  # old rows come first
    all_n, all_r = all_n[first], all_r[first]
    order = np.argsort(all_n[:, 0], kind="stable")  # group by user, discovery order within
    all_n, all_r = all_n[order], all_r[order]
    count = np.bincount(all_n[:, 0], minlength=graph.n_users)
    rank = np.arange(all_n.shape[0]) - np.repeat(np.cumsum(count) - count, count)
    keep = rank < cap
    return all_n[keep], all_r[keep], count


def _user_walks_rejection(walker: Walker, rng, starts, hop_length, collaborative, train_keys, n_items):
    """Walk ``hop_length`` hops from users and keep the valid fine-tuning paths (``last_hop='walk'``).

    Cheap structural checks run first so the binary searches only see the survivors.
    """
    n_users = walker.graph.n_users
    nodes, rels = walk(walker, rng, starts, hop_length, True, collaborative)
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


def _user_walks(walker: Walker, rng, starts, hop_length, collaborative, train_keys, n_items):
    """Walk from users and keep the valid fine-tuning paths (see module docstring).

    The first ``hop_length - 1`` hops are random walks; the last hop is drawn uniformly among the
    edges from the walk's last node to a training item of its user that is not on the path yet
    (:func:`_last_hop`), instead of a uniform edge followed by rejection. At Amazon-book size (25k
    items, ~10 training items per user) rejection kept 0.2% of the walks and round 0 alone took
    minutes; drawing the last hop among the valid edges keeps every walk that can be completed.
    The set of reachable paths is unchanged (a path is still a walk whose hops are graph edges).
    """
    n_users = walker.graph.n_users
    nodes, rels = walk(walker, rng, starts, hop_length - 1, True, collaborative)
    ok = (rels[:, -1] >= 0) & (rels[:, 0] == UI_RELATION)  # full length so far, starts with a UI hop
    for i in range(nodes.shape[1]):  # simple so far: no node twice
        for j in range(i + 1, nodes.shape[1]):
            ok &= nodes[:, i] != nodes[:, j]
    nodes, rels = nodes[ok], rels[ok]
    key = nodes[:, 0] * n_items + (nodes[:, 1] - n_users)  # the first item is a training item of the user
    pos = np.minimum(np.searchsorted(train_keys, key), train_keys.size - 1)
    ok = train_keys[pos] == key
    nodes, rels = nodes[ok], rels[ok]
    done, edge = _last_hop(walker, rng, nodes, collaborative, train_keys, n_items)
    nodes = np.concatenate([nodes[done], walker.neighbor[edge][:, None]], axis=1)
    rels = np.concatenate([rels[done], walker.relation[edge][:, None]], axis=1)
    return nodes, rels


def _last_hop(walker: Walker, rng, nodes, collaborative, train_keys, n_items):
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
