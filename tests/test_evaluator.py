"""Full-ranking evaluation, Pop baseline and path-quality report."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kgglm.data.synthetic import make_synthetic_dataset
from kgglm.decode.recommend import recommend
from kgglm.evaluate.evaluator import PopBaseline, evaluate_model, path_quality, rank_scores, split_csr
from kgglm.model.gpt import KGGLM, ModelConfig
from kgglm.paths.vocab import Vocabulary


def test_rank_scores_excludes_and_drops_unreachable():
    scores = np.array([[0.1, 0.9, 0.5, -np.inf, 0.7], [1.0, 1.0, 2.0, 0.0, 3.0]])
    excluded = (np.array([0, 1, 3]), np.array([1, 4, 2]))  # row 0 excludes item 1; row 1 items 4, 2
    top = rank_scores(scores, excluded, 4)
    assert top.tolist() == [[4, 2, 0, -1], [0, 1, 3, -1]]  # ties -> lower item index first


def test_split_csr():
    ds = make_synthetic_dataset()
    users = np.array([3, 0])
    indptr, items = split_csr(ds, ["train", "valid"], users)
    for row, u in enumerate(users):
        tr = ds.splits["train"]
        va = ds.splits["valid"]
        expected = sorted(set(tr.items[tr.users == u].tolist()) | set(va.items[va.users == u].tolist()))
        assert items[indptr[row]:indptr[row + 1]].tolist() == expected


def test_pop_baseline_matches_independent_computation():
    ds = make_synthetic_dataset(n_users=50, n_items=40, items_per_user=10, seed=4)
    got = PopBaseline(ds).evaluate(split="test", topk=[5, 10])
    counts = np.bincount(ds.splits["train"].items, minlength=ds.n_items)
    te, tr, va = ds.splits["test"], ds.splits["train"], ds.splits["valid"]
    ndcg, recall = [], []
    for u in np.unique(te.users):  # plain per-user loop: the independent reference
        seen = set(tr.items[tr.users == u].tolist()) | set(va.items[va.users == u].tolist())
        ranked = [i for i in sorted(range(ds.n_items), key=lambda i: (-counts[i], i)) if i not in seen][:10]
        rel = set(te.items[te.users == u].tolist())
        dcg = sum(1 / math.log2(r + 2) for r, i in enumerate(ranked) if i in rel)
        idcg = sum(1 / math.log2(r + 2) for r in range(min(len(rel), 10)))
        ndcg.append(dcg / idcg)
        recall.append(len(rel & set(ranked)) / len(rel))
    assert got["ndcg@10"] == pytest.approx(np.mean(ndcg))
    assert got["recall@10"] == pytest.approx(np.mean(recall))
    assert set(got) == {f"{m}@{k}" for m in ("recall", "mrr", "ndcg", "hit", "precision") for k in (5, 10)}


@pytest.fixture(scope="module")
def model_and_data():
    ds = make_synthetic_dataset(n_users=30, n_items=60, items_per_user=16, seed=5)
    vocab = Vocabulary.from_graph(ds.graph)
    torch.manual_seed(0)
    model = KGGLM(ModelConfig(vocab.size, 9, 32, 2, 2, dropout=0.0), torch.as_tensor(vocab.token_types()))
    return ds, vocab, model


def test_evaluate_model_reports_everything(model_and_data):
    ds, vocab, model = model_and_data
    r = evaluate_model(model, ds, vocab, split="test", topk=[5, 10], path_generation_args={"num_beams": 6, "max_num_beams": 24},
                       with_pop=True)
    for k in (5, 10):
        for m in ("recall", "mrr", "ndcg", "hit", "precision"):
            assert 0.0 <= r[f"{m}@{k}"] <= 1.0 and f"pop_{m}@{k}" in r
    assert r["path_coverage"] == 1.0 and r["valid_paths"] == 1.0
    assert r["relation_patterns"] >= 1 and r["n_users"] == len(np.unique(ds.splits["test"].users))
    assert r["score"] == r["ndcg@10"]
    assert model.training  # evaluate_model restores the training mode it found


def test_path_quality_detects_broken_paths(model_and_data):
    ds, vocab, model = model_and_data
    recs = recommend(model, ds, split="valid", topk=5, num_beams=6)
    q = path_quality(recs, ds, vocab)
    assert q["path_coverage"] == 1.0 and q["valid_paths"] == 1.0
    broken = recs.paths.copy()
    broken[0, 0, 2] = vocab.node_offset + ds.n_users + ds.n_items  # an entity the user never watched
    recs.paths = broken
    q = path_quality(recs, ds, vocab)
    assert q["valid_paths"] < 1.0
    seen_item = ds.splits["train"].items[ds.splits["train"].users == recs.users[1]][0]
    recs.paths[1, 0, -1] = vocab.node_offset + ds.n_users + seen_item
    recs.items[1, 0] = seen_item
    q2 = path_quality(recs, ds, vocab)
    assert q2["valid_paths"] < q["valid_paths"]
