"""Top-k metrics against hand-computed values (RecBole conventions)."""

from __future__ import annotations

import numpy as np
import pytest

from kgglm.evaluate.metrics import hit_matrix, metric_value, topk_metrics

# user A: ranked [3, 1, 7, 2], relevant {1, 2, 9}  -> hits at ranks 2 and 4
# user B: ranked [5, -, -, -], relevant {5}        -> hit at rank 1, short list
# user C: ranked [4, 6, 8, 0], relevant {2}        -> no hit
TOPK = np.array([[3, 1, 7, 2], [5, -1, -1, -1], [4, 6, 8, 0]])
REL_INDPTR = np.array([0, 3, 4, 5])
REL_ITEMS = np.array([9, 1, 2, 5, 2])


def test_hand_computed_values():
    r = topk_metrics(TOPK, REL_INDPTR, REL_ITEMS, ks=[2, 4])
    # @2: A recall 1/3, precision 1/2, mrr 1/2, ndcg (1/log2 3) / (1 + 1/log2 3) = 0.386853
    #     B recall 1, precision 1/2, mrr 1, ndcg 1;  C all 0
    assert r["recall@2"] == pytest.approx((1 / 3 + 1) / 3)
    assert r["precision@2"] == pytest.approx((0.5 + 0.5) / 3)
    assert r["hit@2"] == pytest.approx(2 / 3)
    assert r["mrr@2"] == pytest.approx((0.5 + 1) / 3)
    assert r["ndcg@2"] == pytest.approx(0.46228426907818054)
    # @4: A recall 2/3, precision 2/4, ndcg (1/log2 3 + 1/log2 5) / (1 + 1/log2 3 + 1/log2 4) = 0.498189
    assert r["recall@4"] == pytest.approx((2 / 3 + 1) / 3)
    assert r["precision@4"] == pytest.approx((0.5 + 0.25) / 3)
    assert r["hit@4"] == pytest.approx(2 / 3)
    assert r["mrr@4"] == pytest.approx(0.5)
    assert r["ndcg@4"] == pytest.approx(0.49939641915547095)
    assert metric_value(r, "NDCG@4") == r["ndcg@4"]


def test_ideal_ranking_scores_one_and_idcg_uses_min_rel_k():
    topk = np.array([[1, 2, 3, 4, 5]])
    r = topk_metrics(topk, np.array([0, 2]), np.array([2, 1]), ks=[5], metrics=["ndcg", "recall"])
    assert r == {"ndcg@5": pytest.approx(1.0), "recall@5": pytest.approx(1.0)}
    # 7 relevant items, all 3 slots hit: IDCG over min(7, 3) = 3 items -> NDCG 1, recall 3/7
    r = topk_metrics(np.array([[0, 1, 2]]), np.array([0, 7]), np.arange(7), ks=[3])
    assert r["ndcg@3"] == pytest.approx(1.0) and r["recall@3"] == pytest.approx(3 / 7)


def test_repeated_item_counts_once_and_validation():
    r = topk_metrics(np.array([[1, 1, 2]]), np.array([0, 1]), np.array([1]), ks=[3], metrics=["precision"])
    assert r["precision@3"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="no relevant item"):
        topk_metrics(TOPK, np.array([0, 3, 3, 4]), REL_ITEMS[:4], ks=[2])
    with pytest.raises(ValueError, match="exceeds"):
        topk_metrics(TOPK, REL_INDPTR, REL_ITEMS, ks=[5])
    with pytest.raises(ValueError, match="unknown metric"):
        topk_metrics(TOPK, REL_INDPTR, REL_ITEMS, metrics=["auc"], ks=[2])


def test_hit_matrix_matches_python_sets():
    rng = np.random.default_rng(0)
    topk = rng.integers(-1, 50, size=(40, 10))
    rel = [rng.choice(50, size=rng.integers(1, 8), replace=False) for _ in range(40)]
    indptr = np.concatenate([[0], np.cumsum([len(x) for x in rel])])
    hits = hit_matrix(topk, indptr, np.concatenate(rel))
    expected = np.array([[t >= 0 and t in set(rel[u].tolist()) for t in topk[u]] for u in range(40)])
    assert np.array_equal(hits, expected)
