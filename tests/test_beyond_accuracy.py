"""Beyond-accuracy metrics on small examples computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from kgglm.evaluate.beyond_accuracy import coverage, ndcg_paper, novelty, serendipity


def test_coverage_counts_distinct_items_and_ignores_missing():
    # distinct recommended items {0, 1, 2, 3} out of 10
    assert coverage(np.array([[0, 1, -1], [1, 2, 3]]), 10) == pytest.approx(0.4)
    assert coverage(np.full((2, 3), -1), 10) == 0.0
    with pytest.raises(ValueError):
        coverage(np.array([[0]]), 0)


def test_novelty_min_max_popularity():
    counts = np.array([0, 2, 4, 8])  # pop = (c - 0) / 8 = [0, .25, .5, 1]
    # user 0: items 0, 3 -> ((1 - 0) + (1 - 1)) / 2 = 0.5; user 1: item 1 only -> 1 - 0.25 = 0.75
    assert novelty(np.array([[0, 3], [1, -1]]), counts) == pytest.approx((0.5 + 0.75) / 2)
    # the minimum is the catalogue's (here 2, not 0): pop = (c - 2) / 4 = [0, .5, 1]; items 1, 2 -> 0.25
    assert novelty(np.array([[1, 2]]), np.array([2, 4, 6])) == pytest.approx(0.25)
    # a user without any item is left out rather than counted as 0 or 1
    assert novelty(np.array([[1, 2], [-1, -1]]), np.array([2, 4, 6])) == pytest.approx(0.25)
    # all items equally popular: pop = 0, novelty 1
    assert novelty(np.array([[0, 1]]), np.array([3, 3])) == 1.0


def test_serendipity_vs_pop():
    topk = np.array([[0, 1, 2], [3, 4, -1]])
    pop = np.array([[0, 5, 6], [3, 4, 5]])
    # row 0: items 1, 2 not in Pop's list -> 2/3; row 1: 3, 4 are in it and -1 never counts -> 0
    assert serendipity(topk, pop) == pytest.approx((2 / 3 + 0) / 2)
    # relevant and unexpected only (Ge et al.): row 0 keeps item 1 -> 1/3
    hits = np.array([[True, True, False], [False, False, False]])
    assert serendipity(topk, pop, hits) == pytest.approx((1 / 3 + 0) / 2)
    # one global Pop list [0, 3]: row 0 {1, 2} -> 2/3, row 1 {4} -> 1/3
    assert serendipity(topk, np.array([0, 3])) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        serendipity(topk, pop, hits[:, :2])


def test_ndcg_paper_dcg_of_sorted_hits():
    hits = np.array([[0, 1, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=bool)
    # row 0: DCG = 1/log2(2) (rank 2) + 1/log2(4) (rank 4) = 1.5; two hits sorted: 1 + 1/log2(2) = 2 -> 0.75
    # row 1: 1 / 1 = 1; row 2: no hit -> 0
    assert ndcg_paper(hits, 4) == pytest.approx((0.75 + 1 + 0) / 3)
    # k = 2: row 0 hit at rank 2 weighs 1 = its ideal -> 1; row 1 -> 1; row 2 -> 0
    assert ndcg_paper(hits, 2) == pytest.approx(2 / 3)
    # k larger than the lists: the missing ranks are misses
    assert ndcg_paper(hits, 10) == ndcg_paper(hits, 4)
    # a hit at rank 3 alone: DCG 1/log2(3), ideal 1 -> 0.63093
    assert ndcg_paper(np.array([[0, 0, 1]]), 3) == pytest.approx(1 / np.log2(3))
    with pytest.raises(ValueError):
        ndcg_paper(hits, 0)


def test_empty_inputs():
    empty = np.zeros((0, 3), dtype=np.int64)
    assert serendipity(empty, np.zeros((0, 3), dtype=np.int64)) == 0.0
    assert ndcg_paper(np.zeros((0, 3), dtype=bool), 3) == 0.0
    assert novelty(empty, np.array([1, 2])) == 0.0
