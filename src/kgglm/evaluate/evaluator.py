"""Full-ranking evaluation of KGGLM and of the popularity baseline, plus a path-quality report.

Protocol (RecBole full ranking): every user with at least one item in the evaluated split is
ranked over all items minus the items they interacted with in training (and validation, when
evaluating on test). KGGLM's ranking is its best-path score per item (``-inf`` when no path
reached the item); ``Pop`` ranks by training interaction counts. Both go through
:func:`evaluate_topk`, so their numbers are directly comparable.
"""

from __future__ import annotations

import logging
import time
from typing import Iterable

import numpy as np
import torch

from kgglm.decode.constraints import excluded_items_csr
from kgglm.decode.recommend import Recommendations, default_excluded_splits, recommend, users_with_items
from kgglm.evaluate.metrics import hit_matrix, metric_value, topk_metrics
from kgglm.paths.vocab import PAD, RELATION_OFFSET, Vocabulary

log = logging.getLogger(__name__)


def split_csr(dataset, splits: Iterable[str], users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Items of ``users`` (one CSR segment per entry of ``users``) over the union of ``splits``."""
    users = np.asarray(users, dtype=np.int64)
    all_indptr, all_items = excluded_items_csr(dataset.n_users, dataset.n_items,
                                               [dataset.splits[s] for s in splits])
    lo = all_indptr[users]
    counts = all_indptr[users + 1] - lo
    indptr = np.zeros(len(users) + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    pos = np.arange(indptr[-1]) - np.repeat(indptr[:-1], counts) + np.repeat(lo, counts)
    return indptr, all_items[pos]


def rank_scores(scores: np.ndarray, excluded: tuple[np.ndarray, np.ndarray], k: int) -> np.ndarray:
    """Top-``k`` item indices per row of ``scores [n, n_items]`` after removing excluded items.

    Items with score ``-inf`` (excluded or unreachable) are never ranked: they become ``-1``.
    """
    scores = np.array(scores, dtype=np.float64, copy=True)
    indptr, items = excluded
    rows = np.repeat(np.arange(scores.shape[0]), np.diff(indptr))
    scores[rows, items] = -np.inf
    k = min(k, scores.shape[1])
    # stable descending sort: ties broken by lower item index, so rankings are deterministic
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.where(np.isfinite(np.take_along_axis(scores, top, axis=1)), top, -1)


def evaluate_topk(topk_items: np.ndarray, users: np.ndarray, dataset, split: str,
                  topk: Iterable[int] = (10,), metrics: Iterable[str] | None = None) -> dict[str, float]:
    """Metrics of ranked lists ``topk_items [n, K]`` for ``users`` against ``split``'s items."""
    rel = split_csr(dataset, [split], users)
    return topk_metrics(topk_items, rel[0], rel[1], topk, metrics)


class PopBaseline:
    """Most-popular baseline: items ranked by their number of training interactions."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset
        self.counts = np.bincount(dataset.splits["train"].items, minlength=dataset.n_items).astype(np.float64)

    def scores(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(users), self.dataset.n_items))

    def recommend(self, users: np.ndarray, *, split: str = "test", topk: int = 10) -> np.ndarray:
        excluded = split_csr(self.dataset, default_excluded_splits(split), users)
        return rank_scores(self.scores(users), excluded, topk)

    def evaluate(self, *, split: str = "test", topk: Iterable[int] = (10,),
                 metrics: Iterable[str] | None = None) -> dict[str, float]:
        users = users_with_items(self.dataset, split)
        ks = sorted({int(k) for k in topk})
        ranked = self.recommend(users, split=split, topk=ks[-1])
        return evaluate_topk(ranked, users, self.dataset, split, ks, metrics)


def path_quality(recs: Recommendations, dataset, vocab: Vocabulary) -> dict[str, float]:
    """Explanation checks, independent of the decoder (graph lookups via ``has_edge``).

    * ``path_coverage``: share of recommended items whose path is complete and ends on that item;
    * ``valid_paths``: share of those paths that start at the user, use the user-item relation
      first, have every hop in the graph, and end on an item not seen in the excluded splits;
    * ``relation_patterns``: number of distinct relation sequences used.
    """
    graph = dataset.graph
    rows, ranks = np.nonzero(recs.items >= 0)
    n_rec = len(rows)
    if n_rec == 0:
        return {"path_coverage": 0.0, "valid_paths": 0.0, "relation_patterns": 0, "n_recommended": 0}
    paths = recs.paths[rows, ranks]  # [n, 2H+1]
    items = recs.items[rows, ranks]
    nodes = paths[:, 0::2] - vocab.node_offset
    rels = paths[:, 1::2] - RELATION_OFFSET
    complete = ~(paths == PAD).any(axis=1) & (paths[:, -1] == vocab.node_offset + graph.n_users + items)
    ok = complete & (nodes[:, 0] == recs.users[rows]) & (rels[:, 0] == 0)
    ok &= graph.has_edge(nodes[:, :-1], rels, nodes[:, 1:]).all(axis=1)
    excluded = split_csr(dataset, default_excluded_splits(recs.split), recs.users)
    seen = hit_matrix(recs.items, *excluded)[rows, ranks]
    ok &= ~seen
    patterns = np.unique(rels[complete], axis=0).shape[0] if complete.any() else 0
    k = recs.items.shape[1]
    return {"path_coverage": float(complete.mean()), "valid_paths": float(ok.mean()),
            "relation_patterns": int(patterns), "n_recommended": int(n_rec),
            "users_short": int(((recs.items >= 0).sum(axis=1) < k).sum())}


def evaluate_model(model, dataset, vocab: Vocabulary | None = None, *, split: str = "valid",
                   topk: Iterable[int] = (10,), metrics: Iterable[str] | None = None,
                   path_generation_args: dict | None = None, batch_size: int = 32, device=None,
                   hop_length: int = 3, valid_metric: str | None = "NDCG@10", users=None,
                   with_pop: bool = False, show_progress: bool = False) -> dict:
    """Generate top-k paths for every user with items in ``split`` and compute all metrics.

    Returns a flat dict: ``recall@10`` ... , the path-quality entries, ``n_users``, ``seconds``,
    ``users_per_second``, ``score`` (the ``valid_metric`` value, for early stopping) and, with
    ``with_pop``, the same metrics for the popularity baseline under ``pop_<name>``.
    """
    ks = sorted({int(k) for k in (topk if isinstance(topk, Iterable) else [topk])})
    gen = dict(path_generation_args or {})
    num_beams = int(gen.pop("num_beams", 20))
    paths_per_user = gen.pop("paths_per_user", None)
    users = users_with_items(dataset, split) if users is None else np.asarray(users, dtype=np.int64)
    vocab = vocab or Vocabulary.from_graph(dataset.graph, dataset.name)
    t0 = time.perf_counter()
    recs = recommend(model, dataset, users, vocab=vocab, split=split, topk=ks[-1], num_beams=num_beams,
                     paths_per_user=None, hop_length=hop_length, batch_size=batch_size, device=device,
                     show_progress=show_progress, **gen)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    if paths_per_user:
        log.debug("evaluate_model: paths_per_user=%s does not change the ranked top-k", paths_per_user)
    result: dict = evaluate_topk(recs.items[:, :ks[-1]], users, dataset, split, ks, metrics)
    result.update(path_quality(recs, dataset, vocab))
    result.update(n_users=int(len(users)), seconds=seconds,
                  users_per_second=float(len(users) / seconds) if seconds > 0 else float("inf"))
    if valid_metric:
        result["score"] = metric_value(result, valid_metric)
    if with_pop:
        pop = PopBaseline(dataset).evaluate(split=split, topk=ks, metrics=metrics)
        result.update({f"pop_{k}": v for k, v in pop.items()})
    return result
