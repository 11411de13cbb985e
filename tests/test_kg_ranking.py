"""Filtered tail ranking: hand-computed ranks (ties, filtering, type restriction, any-tail) and a
brute-force cross-check on random tied scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kgglm.evaluate.kg_ranking import TailIndex, anytail_ranks, evaluate_tail_ranking, rank_metrics, tail_ranks

# Candidates are nodes 10..14 (offset 10, 5 columns); relation 1; heads 0 and 1.
OFFSET, N_CAND, N_REL = 10, 5, 2
SCORES = {(0, 1): [0.5, 0.95, 0.9, 0.2, 0.7],  # nodes 10, 11, 12, 13, 14
          (1, 1): [0.9, 0.3, 0.3, 0.3, 0.1]}
TEST = np.array([[0, 1, 11], [0, 1, 13], [1, 1, 12]])
TRAIN = np.array([[0, 1, 14], [1, 1, 10]])


def table_scores(heads: np.ndarray, rels: np.ndarray) -> torch.Tensor:
    return torch.tensor([SCORES[(int(h), int(r))] for h, r in zip(heads, rels)])


def test_hand_computed_ranks_with_ties_and_filtering():
    # (0,1,11): s=0.95; 13 (test) and 14 (train) are filtered; kept 10 (0.5), 12 (0.9): rank 1.
    # (0,1,13): s=0.2;  11 (test), 14 (train) filtered; kept 10, 12 both higher: rank 3.
    # (1,1,12): s=0.3;  10 (train) filtered; kept 11, 13 tie at 0.3, 14 lower: optimistic 1,
    #           pessimistic 3, realistic 2.
    r = tail_ranks(table_scores, TEST, filter_triples=[TRAIN], n_relations=N_REL, n_candidates=N_CAND,
                   candidate_offset=OFFSET, type_triples=TRAIN, batch_size=2)
    np.testing.assert_array_equal(r.optimistic, [1, 3, 1])
    np.testing.assert_array_equal(r.pessimistic, [1, 3, 3])
    np.testing.assert_array_equal(r.realistic, [1, 3, 2])
    # type restriction: relation 1's train tails are {10, 14}; 14 is filtered for head 0, 10 for head 1
    # (0,1,11): kept {10: 0.5} < 0.95 -> 1; (0,1,13): {10: 0.5} > 0.2 -> 2; (1,1,12): {14: 0.1} -> 1
    np.testing.assert_array_equal(r.type_realistic, [1, 2, 1])


def test_unfiltered_train_changes_rank():
    # without the train filter, 14 (0.7) beats 13 (0.2) and 10 (0.9) beats 12 (0.3)
    r = tail_ranks(table_scores, TEST, filter_triples=[], n_relations=N_REL, n_candidates=N_CAND,
                   candidate_offset=OFFSET)
    np.testing.assert_array_equal(r.realistic, [1, 4, 3])


def test_metrics_and_anytail():
    m = evaluate_tail_ranking(table_scores, TEST, filter_triples=[TRAIN], n_relations=N_REL, n_candidates=N_CAND,
                              candidate_offset=OFFSET, type_triples=TRAIN, ks=(1, 3))
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 2) / 3)
    assert m["mr"] == pytest.approx(2.0)
    assert m["hits@1"] == pytest.approx(1 / 3)
    assert m["hits@3"] == pytest.approx(1.0)
    assert m["optimistic_mrr"] == pytest.approx((1 + 1 / 3 + 1) / 3)
    assert m["pessimistic_mrr"] == pytest.approx((1 + 1 / 3 + 1 / 3) / 3)
    assert m["type_mrr"] == pytest.approx((1 + 1 / 2 + 1) / 3)
    # any tail: query (0,1) has tails 11 (rank 1) and 13 (rank 3) -> 1; query (1,1) -> 2
    assert m["anytail_queries"] == 2
    assert m["anytail_mrr"] == pytest.approx((1 + 1 / 2) / 2)
    assert m["anytail_hits@1"] == pytest.approx(0.5)
    assert m["anytail_mr"] == pytest.approx(1.5)


def test_anytail_ranks_groups_by_query():
    triples = np.array([[5, 1, 20], [3, 2, 21], [5, 1, 22], [3, 2, 23], [5, 2, 20]])
    best = anytail_ranks(triples, np.array([4.0, 2.5, 1.5, 7.0, 9.0]), n_relations=3)
    assert sorted(best.tolist()) == [1.5, 2.5, 9.0]


def test_rank_metrics_fractional_rank_is_not_a_hit():
    m = rank_metrics(np.array([10.5, 10.0]), ks=(10,))
    assert m["hits@10"] == 0.5


def test_tail_index_mask_matches_brute_force():
    rng = np.random.default_rng(0)
    triples = np.column_stack([rng.integers(0, 6, 200), rng.integers(0, 3, 200), rng.integers(4, 30, 200)])
    index = TailIndex([triples[:120], triples[120:]], n_relations=3)
    heads, rels = np.array([0, 1, 5, 2, 0]), np.array([0, 2, 1, 1, 0])
    mask = index.mask(heads, rels, n_candidates=20, offset=8).numpy()
    for i, (h, r) in enumerate(zip(heads, rels)):
        tails = set(triples[(triples[:, 0] == h) & (triples[:, 1] == r), 2].tolist())
        expected = [(8 + c) in tails for c in range(20)]
        assert mask[i].tolist() == expected


def test_random_tied_scores_match_brute_force():
    """Integer scores force many ties; compare with a per-triple Python implementation."""
    rng = np.random.default_rng(1)
    n_cand, offset, n_rel = 15, 3, 4
    score_table = rng.integers(0, 4, size=(6, n_rel, n_cand)).astype(np.float32)

    def score_fn(h, r):
        return torch.from_numpy(score_table[h, r])

    def rand_triples(n):
        return np.column_stack([rng.integers(0, 6, n), rng.integers(1, n_rel, n),
                                rng.integers(offset, offset + n_cand, n)])

    train, valid, test = rand_triples(60), rand_triples(10), rand_triples(25)
    test = test[np.unique(test, axis=0, return_index=True)[1]]
    r = tail_ranks(score_fn, test, filter_triples=[train, valid], n_relations=n_rel, n_candidates=n_cand,
                   candidate_offset=offset, type_triples=train, batch_size=4)
    known = {tuple(t) for t in np.concatenate([train, valid, test]).tolist()}
    for i, (h, rel, t) in enumerate(test.tolist()):
        s = score_table[h, rel]
        st = s[t - offset]
        others = [c for c in range(n_cand) if c != t - offset and (h, rel, c + offset) not in known]
        opt = 1 + sum(s[c] > st for c in others)
        pess = 1 + sum(s[c] >= st for c in others)
        assert r.realistic[i] == pytest.approx((opt + pess) / 2)
        allowed = {c - offset for (_, rr, c) in train.tolist() if rr == rel}
        typed = [c for c in others if c in allowed]
        t_opt = 1 + sum(s[c] > st for c in typed)
        t_pess = 1 + sum(s[c] >= st for c in typed)
        assert r.type_realistic[i] == pytest.approx((t_opt + t_pess) / 2)


def test_tail_outside_candidates_is_an_error():
    with pytest.raises(ValueError, match="outside the candidate nodes"):
        tail_ranks(table_scores, np.array([[0, 1, 3]]), filter_triples=[], n_relations=N_REL, n_candidates=N_CAND,
                   candidate_offset=OFFSET)
