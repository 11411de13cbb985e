"""The one judge: full-ranking metrics of ranked lists on a split, plus path quality.

Protocol (RecBole full ranking): every user with at least one item in the evaluated split is
ranked over all items minus the items they interacted with before it (train; train and valid on
test), as :meth:`Dataset.seen_items` says. :func:`evaluate` never ranks nor decodes: it judges the
:class:`~kgglm.evaluate.ranked.Recommendations` a ranker hands it (the path decoder for KGGLM, the
scorer ranker for baselines; :func:`kgglm.tasks.ranking.evaluate_model` wires the two), so the
numbers of every model are directly comparable. Lists with paths also get the path metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from kgglm.data.dataset import csr_rows
from kgglm.evaluate.beyond_accuracy import coverage, ndcg_paper, novelty, serendipity
from kgglm.evaluate.explanation import explanation_arrays, explanation_metrics
from kgglm.evaluate.metrics import hit_matrix, metric_value, normalize_metric_names, topk_metrics
from kgglm.evaluate.ranked import Recommendations
from kgglm.paths.vocab import PAD, Vocabulary

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalConfig:
    """What is measured; field names are the config's key names (``topk``, ``metrics``, ...)."""

    topk: tuple[int, ...]
    metrics: tuple[str, ...]
    valid_metric: str
    eval_batch_size: int
    paper_ndcg: bool = False  # not a ranking choice: also report ndcg_paper@K (off by default)

    def __post_init__(self) -> None:
        if not self.topk or min(self.topk) < 1:
            raise ValueError(f"topk must be positive integers, got {list(self.topk)}")
        normalize_metric_names(self.metrics)
        if self.eval_batch_size < 1:
            raise ValueError(f"eval_batch_size must be positive, got {self.eval_batch_size}")

    @property
    def max_k(self) -> int:
        return self.topk[-1]


@dataclass
class Evaluation:
    """Metrics of one split and the ranked lists they were computed from."""

    metrics: dict
    recommendations: Recommendations

    @property
    def score(self) -> float:
        return float(self.metrics["score"])


def evaluate(recs: Recommendations, dataset, settings: EvalConfig, *, vocab: Vocabulary | None = None,
             seconds: float = 0.0, label: str = "model") -> Evaluation:
    """All metrics of the ranked lists ``recs`` (every user of ``recs.users``) against ``recs.split``.

    Returns the metrics (``recall@10`` ..., path quality when the lists carry paths, which needs
    ``vocab``; ``n_users``, ``seconds`` and ``users_per_second`` of the ``seconds`` the ranking took,
    and ``score``, the ``valid_metric`` value) and the lists themselves. ``label`` names the model
    in the log.
    """
    users, split = recs.users, recs.split
    metrics: dict = evaluate_topk(recs.items[:, :settings.max_k], users, dataset, split, settings.topk,
                                  settings.metrics)
    metrics.update(beyond_accuracy(recs, dataset, settings))
    if recs.paths.size:
        if vocab is None:
            raise ValueError("evaluate: ranked lists with paths need the vocabulary that encoded them")
        metrics.update(path_quality(recs, dataset, vocab))
        metrics.update(explanation_quality(recs, dataset, vocab, settings.max_k))
    metrics.update(n_users=int(len(users)), seconds=round(seconds, 3),
                   users_per_second=round(len(users) / seconds, 1) if seconds > 0 else float("inf"))
    metrics["score"] = metric_value(metrics, settings.valid_metric)
    logger.info("%s %s: %s", label, split, {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})
    return Evaluation(metrics, recs)


def beyond_accuracy(recs: Recommendations, dataset, settings: EvalConfig) -> dict[str, float]:
    """``coverage@K``, ``novelty@K``, ``serendipity@K`` (vs Pop's top-K for the same users) and, when
    asked, the paper code's ``ndcg_paper@K`` (see :mod:`kgglm.evaluate.beyond_accuracy`)."""
    k = settings.max_k
    top = recs.items[:, :k]
    counts = dataset.train_item_counts()
    seen = dataset.seen_items(recs.split)
    step = settings.eval_batch_size  # Pop's lists in user batches: memory is batch x items, not users x items
    pop = np.concatenate([rank_scores(np.broadcast_to(counts, (len(chunk), dataset.n_items)), csr_rows(seen, chunk), k)
                          for chunk in np.array_split(recs.users, max(1, -(-len(recs.users) // step)))]
                         ) if len(recs.users) else np.zeros((0, k), np.int64)
    out = {f"coverage@{k}": coverage(top, dataset.n_items), f"novelty@{k}": novelty(top, counts),
           f"serendipity@{k}": serendipity(top, pop)}
    if settings.paper_ndcg:
        hits = hit_matrix(top, *csr_rows(dataset.split_items(recs.split), recs.users))
        out.update({f"ndcg_paper@{kk}": ndcg_paper(hits, kk) for kk in settings.topk})
    return out


def explanation_quality(recs: Recommendations, dataset, vocab: Vocabulary, k: int) -> dict[str, float]:
    """The explanation-path metrics of :mod:`kgglm.evaluate.explanation` over the top-``k`` lists, with
    the relation distribution flattened into ``share:<relation>`` entries (relations that occur)."""
    cut = Recommendations(recs.users, recs.items[:, :k], recs.scores[:, :k], recs.paths[:, :k], recs.split)
    users, items, nodes, rels = explanation_arrays(cut, vocab)
    out = explanation_metrics(dataset, users, items, nodes, rels, k=k, tables=dataset.explanation_tables())
    shares = out.pop("relation_share")
    out.update({f"share:{name}": float(v) for name, v in sorted(shares.items(), key=lambda kv: -kv[1])})
    return out


def rank_scores(scores: np.ndarray, excluded: tuple[np.ndarray, np.ndarray], k: int) -> np.ndarray:
    """Top-``k`` item indices per row of ``scores [n, n_items]`` after removing excluded items
    (``excluded``: CSR with one segment per row).

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
    rel = csr_rows(dataset.split_items(split), users)
    return topk_metrics(topk_items, rel[0], rel[1], topk, metrics)


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
    nodes = vocab.token_node(paths[:, 0::2])
    rels = vocab.token_relation(paths[:, 1::2])
    complete = ~(paths == PAD).any(axis=1) & (paths[:, -1] == vocab.item_token(items))
    ok = complete & (nodes[:, 0] == recs.users[rows]) & (rels[:, 0] == 0)
    ok &= graph.has_edge(nodes[:, :-1], rels, nodes[:, 1:]).all(axis=1)
    seen = hit_matrix(recs.items, *csr_rows(dataset.seen_items(recs.split), recs.users))[rows, ranks]
    ok &= ~seen
    patterns = np.unique(rels[complete], axis=0).shape[0] if complete.any() else 0
    k = recs.items.shape[1]
    return {"path_coverage": float(complete.mean()), "valid_paths": float(ok.mean()),
            "relation_patterns": int(patterns), "n_recommended": int(n_rec),
            "users_short": int(((recs.items >= 0).sum(axis=1) < k).sum())}
