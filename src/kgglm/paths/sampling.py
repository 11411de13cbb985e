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

The samplers, by what they sample: pre-training walks here (:func:`sample_pretrain_paths`), user
paths in :mod:`kgglm.paths.user_paths` (:func:`sample_user_paths`, re-exported here), their exact
enumeration in :mod:`kgglm.paths.exact_paths`; the shared walk machinery (:class:`PathBatch`, one
vectorised hop, duplicate removal) in :mod:`kgglm.paths.walker`.
"""

from __future__ import annotations

import logging

import numpy as np

from kgglm.data.graph import CollaborativeGraph
from kgglm.paths.user_paths import LAST_HOPS, sample_user_paths
from kgglm.paths.walker import PathBatch, Walker, first_unique, walk

__all__ = ["LAST_HOPS", "PathBatch", "sample_pretrain_paths", "sample_user_paths"]

logger = logging.getLogger(__name__)


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
    walker = Walker(graph, ui_share)
    degree = graph.degree() if include_users else walker.kg_degree()
    starts = np.repeat(np.flatnonzero(degree > 0).astype(np.int64), paths_per_node)
    nodes, rels = walk(walker, rng, starts, hi_h, include_users, include_users)
    length = rng.integers(lo_h, hi_h + 1, size=starts.shape[0]) if hi_h > lo_h else None
    if length is not None:  # cut each walk to its drawn length
        cols = np.arange(hi_h)
        rels[cols[None, :] >= length[:, None]] = -1
        nodes[:, 1:][cols[None, :] >= length[:, None]] = -1
    keep = rels[:, 0] >= 0  # at least one hop
    nodes, rels = nodes[keep], rels[keep]
    first = first_unique(nodes, rels, graph.n_nodes, graph.n_relations)
    logger.info("pretrain paths: %d walks from %d starts, %d distinct", keep.sum(), starts.size, first.size)
    return PathBatch(nodes[first], rels[first])
