"""Explanation post-processing (Balloccu et al., SIGIR 2022): re-select each recommended item's path.

The ranking is fixed; only the path shown for each item changes. For each user, items are taken
in rank order and, among the item's candidate paths (the ones the model decoded to it, see
:func:`kgglm.decode.beam_search.beam_search` with ``n_candidates``), the path maximising

    (1 - alpha) * p + alpha * (LIR(u, l) + SEP(s) + new_type) / 3

is shown, where ``p`` is the path's log-probability min-max normalised over the user's candidates,
``LIR(u, l)`` the recency of the linking interaction (the path's first item), ``SEP(s)`` the
popularity of the shared entity (the node before the recommended item), both from
:class:`kgglm.data.explanation_tables.ExplanationTables`, and ``new_type`` is 1 when the path's type
(its last relation) is not yet used by the user's earlier explanations (the greedy ETD term).
``alpha = 0`` shows the most probable path; ``alpha = 1`` optimises recency, popularity and
diversity alone.
"""

from __future__ import annotations

import numpy as np

from kgglm.data.explanation_tables import ExplanationTables
from kgglm.paths.vocab import Vocabulary


def select_explanations(users: np.ndarray, candidate_paths: np.ndarray, candidate_scores: np.ndarray, *,
                        alpha: float, tables: ExplanationTables, vocab: Vocabulary) -> tuple[np.ndarray, np.ndarray]:
    """The chosen path ``[U, K, 2H+1]`` and its log-probability ``[U, K]`` for each item.

    ``candidate_paths [U, K, M, 2H+1]`` are token ids ``U r1 n1 ... nH`` and ``candidate_scores``
    their log-probabilities (``-inf`` for missing candidates). Items without a candidate keep
    candidate 0 (``[PAD]``).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"explanation_alpha must be in [0, 1], got {alpha}")
    paths = np.asarray(candidate_paths, dtype=np.int64)
    scores = np.asarray(candidate_scores, dtype=np.float64)
    n_users, k, m, _ = paths.shape
    valid = np.isfinite(scores)
    graph = tables.graph
    hops = (paths.shape[-1] - 1) // 2
    nodes = vocab.token_node(paths[..., 0::2])
    rels = vocab.token_relation(paths[..., 1::2])
    linked = np.where(valid, nodes[..., 1] - graph.n_users, -1)
    lir = tables.lir(np.asarray(users, dtype=np.int64)[:, None, None], linked)
    shared = np.clip(nodes[..., hops - 1], 0, graph.n_nodes - 1)
    sep = np.where(valid, tables.sep[shared], 0.0)
    ptype = np.clip(rels[..., hops - 1], 0, graph.n_relations - 1)
    # log-probabilities min-max normalised per user over its valid candidates
    lo = np.where(valid, scores, np.inf).min(axis=(1, 2), keepdims=True)
    hi = np.where(valid, scores, -np.inf).max(axis=(1, 2), keepdims=True)
    prob = np.where(valid, (scores - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0)
    used = np.zeros((n_users, graph.n_relations), dtype=bool)
    rows = np.arange(n_users)
    choice = np.zeros((n_users, k), dtype=np.int64)
    for j in range(k):  # greedy in rank order (a loop over K, vectorised over users and candidates)
        new_type = ~used[rows[:, None], ptype[:, j]]
        objective = (1.0 - alpha) * prob[:, j] + alpha * (lir[:, j] + sep[:, j] + new_type) / 3.0
        objective = np.where(valid[:, j], objective, -np.inf)
        choice[:, j] = np.argmax(objective, axis=1)
        picked = valid[rows, j, choice[:, j]]
        used[rows[picked], ptype[rows[picked], j, choice[picked, j]]] = True
    chosen = np.take_along_axis(paths, choice[:, :, None, None], axis=2)[:, :, 0]
    chosen_scores = np.take_along_axis(scores, choice[:, :, None], axis=2)[:, :, 0]
    return chosen, chosen_scores
