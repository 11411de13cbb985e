"""Exact enumeration of 3-hop user paths (``last_hop='direct'``), drawn in the direct walk's law.

For a user whose path space is cheap to list (:func:`exact_cost` neighbour look-ups at most
``256 x cap``), :func:`exact_user_paths` lists every path ``U -ui-> I -> X -> I'`` and draws cap of
them without replacement with the probability the direct walk gives them (Efraimidis-Spirakis keys),
instead of walking (see :mod:`kgglm.paths.sampling` and :func:`kgglm.paths.user_paths.sample_user_paths`).
"""

from __future__ import annotations

import numpy as np

from kgglm.data.dataset import segments
from kgglm.data.graph import UI_RELATION
from kgglm.paths.walker import Walker, group_sizes

_EXACT_CHUNK_LOOKUPS = 1 << 22  # neighbour look-ups per vectorised batch of exact users (bounds memory)


def first_hop_probs(walker: Walker, nodes: np.ndarray, collaborative: bool) -> tuple[np.ndarray, np.ndarray]:
    """Probability of each UI edge and of each KG edge out of item ``nodes`` on a walk's second hop,
    given the walk came from one of the item's users (the back-step to that user is rejected, which
    conditions the draw of :meth:`Walker._draw` on not going back). 0 where no such edge exists."""
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


def exact_cost(walker: Walker, users: np.ndarray, items: np.ndarray, n_users: int) -> np.ndarray:
    """Neighbour look-ups :func:`exact_user_paths` makes per user: the sum over its item pairs
    of the smaller degree, from one sort (the k-th smallest degree is the smaller one in s-1-k pairs).
    ``users``/``items``: one row per training item, grouped by user."""
    deg = walker.end[items] - walker.start[items]
    order = np.lexsort((deg, users))
    count = np.bincount(users, minlength=n_users)
    rank = segments(np.zeros_like(count), count)[1]  # position within the user's items
    return np.bincount(users[order], weights=deg[order] * (count[users[order]] - 1 - rank), minlength=n_users)


def exact_user_paths(walker: Walker, rng, users: np.ndarray, cost: np.ndarray, cap: int, collaborative: bool,
                     train_keys: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Every 3-hop path of ``users`` (all of them, exactly), then ``cap`` of them per user drawn
    the way ``last_hop='direct'`` walks would find them (see :func:`sample_user_paths`).

    Paths ``U -ui-> I -> X -> I'`` for each pair {I, I'} of U's training items: X runs over the
    allowed neighbours of the item with the smaller degree, the edges X - other item are found by
    binary search in the (src, dst)-sorted edges (distinct pairs once per chunk of users). A path's
    probability under the direct walk is ``q(I, edge 1) / completions(U, I, X)`` up to a per-user
    constant (:func:`first_hop_probs`; the last hop is uniform over the completions), and keeping
    the ``cap`` largest ``log(u) / p`` (Efraimidis-Spirakis) draws them in the same law as the first
    ``cap`` distinct paths of an endless stream of walks: sampling without replacement proportional
    to ``p``. Rows come out grouped by user, in that draw order.
    """
    walker.index_pairs(train_keys, n_items)
    n_users = walker.graph.n_users
    tptr = walker.train_indptr
    s = tptr[users + 1] - tptr[users]
    # a path starts with a graph edge user -> first item (always, unless train is not the graph's)
    t_first = walker.find_pairs(train_keys // n_items, train_keys % n_items + n_users)[1] > 0
    out_n, out_r = [], []
    bounds = np.searchsorted(np.cumsum(cost), np.arange(0, cost.sum(), _EXACT_CHUNK_LOOKUPS), side="right")
    bounds = np.unique(np.concatenate([bounds, [0, users.size]]))
    for c0, c1 in zip(bounds[:-1], bounds[1:]):
        cu = users[c0:c1]
        pairs = _item_pairs(walker, cu, s[c0:c1], train_keys, t_first, n_items)
        nodes, rels = _pair_paths(walker, cu, pairs, collaborative)
        order = _draw(walker, rng, cu, nodes, rels, cap, collaborative)
        out_n.append(nodes[order])
        out_r.append(rels[order])
    if not out_n:
        return np.zeros((0, 4), dtype=np.int64), np.zeros((0, 3), dtype=np.int64)
    return np.concatenate(out_n), np.concatenate(out_r)


def _item_pairs(walker: Walker, cu: np.ndarray, cs: np.ndarray, train_keys: np.ndarray, t_first: np.ndarray,
                n_items: int) -> tuple[np.ndarray, ...]:
    """The item pairs (a < b in each user's item list) of the users ``cu`` (``cs`` items each):
    ``(local user index, item of smaller degree, other item, whether each starts a path)``."""
    n_users = walker.graph.n_users
    deg = walker.end - walker.start  # pair-sorted rows hold every edge; KG-only walks filter them
    sq = cs * cs
    local, k = segments(np.zeros_like(sq), sq)  # local user index, index in its s x s grid
    base, side = walker.train_indptr[cu][local], cs[local]
    a, b = k // side, k % side
    m = a < b
    pu = local[m]
    ia = train_keys[base[m] + a[m]] % n_items + n_users
    ib = train_keys[base[m] + b[m]] % n_items + n_users
    fa, fb = t_first[base[m] + a[m]], t_first[base[m] + b[m]]
    swap = deg[ib] < deg[ia]
    small, other = np.where(swap, ib, ia), np.where(swap, ia, ib)
    f_small, f_other = np.where(swap, fb, fa), np.where(swap, fa, fb)
    return pu, small, other, f_small, f_other


def _pair_paths(walker: Walker, cu: np.ndarray, pairs: tuple[np.ndarray, ...],
                collaborative: bool) -> tuple[np.ndarray, np.ndarray]:
    """Every path ``U -ui-> I -> X -> I'`` through the item ``pairs`` of the users ``cu``, both directions:
    the connections small - X - other of the distinct pairs (ordered by other, small: sorted look-ups),
    then handed to every user pair."""
    g = walker.graph
    n_nodes, pk, po = g.n_nodes, walker.pair_keys, walker.pair_order
    pu, small, other, f_small, f_other = pairs
    deg = walker.end - walker.start
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
    return nodes, rels


def _draw(walker: Walker, rng, cu: np.ndarray, nodes: np.ndarray, rels: np.ndarray, cap: int,
          collaborative: bool) -> np.ndarray:
    """Rows of the ``cap`` paths per user drawn without replacement proportionally to their walk
    probability, grouped by user in draw order."""
    n_nodes, n_rel = walker.graph.n_nodes, walker.graph.n_relations
    q_ui, q_kg = first_hop_probs(walker, nodes[:, 1], collaborative)
    q = np.where(rels[:, 1] == UI_RELATION, q_ui, q_kg)
    completions = group_sizes([nodes[:, 0] - cu[0], nodes[:, 1], rels[:, 1], nodes[:, 2]],
                              [int(cu[-1] - cu[0]) + 1, n_nodes, n_rel, n_nodes])
    key = np.log1p(-rng.random(nodes.shape[0])) / (q / completions)
    order = np.lexsort((-key, nodes[:, 0]))
    count = np.bincount(nodes[:, 0] - cu[0], minlength=cu.size)
    rank = segments(np.zeros_like(count), count)[1]  # position in the user's draw order
    return order[rank < cap]
