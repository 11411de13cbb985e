"""The one evaluation path: the pure judge of ranked lists, scorers and path decoders wired to it
(kgglm.tasks.ranking), seen-item masks and path quality."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cases import eval_settings, generation, make_model, reference_metrics
from kgglm.decode.recommend import recommend
from kgglm.evaluate.evaluator import evaluate, path_quality, rank_scores
from kgglm.evaluate.ranked import Recommendations
from kgglm.paths.vocab import Vocabulary
from kgglm.synthetic.small import make_synthetic_dataset
from kgglm.tasks.ranking import evaluate_model


class CountScorer:
    """A scorer (the baseline interface): training counts, the Pop rule written independently."""

    name = "counts"

    def __init__(self, ds):
        self.counts = np.bincount(ds.splits["train"].items, minlength=ds.n_items).astype(float)

    def score_items(self, users):
        return np.tile(self.counts, (len(users), 1))


def test_rank_scores_excludes_and_drops_unreachable():
    scores = np.array([[0.1, 0.9, 0.5, -np.inf, 0.7], [1.0, 1.0, 2.0, 0.0, 3.0]])
    excluded = (np.array([0, 1, 3]), np.array([1, 4, 2]))  # row 0 excludes item 1; row 1 items 4, 2
    top = rank_scores(scores, excluded, 4)
    assert top.tolist() == [[4, 2, 0, -1], [0, 1, 3, -1]]  # ties -> lower item index first


def test_seen_items_is_train_before_valid_and_train_valid_before_test():
    ds = make_synthetic_dataset()
    tr, va = ds.splits["train"], ds.splits["valid"]
    for split, parts in (("valid", [tr]), ("test", [tr, va])):
        indptr, items = ds.seen_items(split)
        for u in (0, 3, 7):
            expected = sorted(set().union(*(set(p.items[p.users == u].tolist()) for p in parts)))
            assert items[indptr[u]:indptr[u + 1]].tolist() == expected
    with pytest.raises(ValueError, match="split"):
        ds.seen_items("train")


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_scorer_matches_independent_computation(batch):
    ds = make_synthetic_dataset(n_users=50, n_items=40, items_per_user=10, seed=4)
    got = evaluate_model(CountScorer(ds), ds, "test", eval_settings(topk=(5, 10), eval_batch_size=batch)).metrics
    counts = np.bincount(ds.splits["train"].items, minlength=ds.n_items)
    te, tr, va = ds.splits["test"], ds.splits["train"], ds.splits["valid"]
    ranked, relevant = [], []
    for u in np.unique(te.users):  # plain per-user loop: the independent reference
        seen = set(tr.items[tr.users == u].tolist()) | set(va.items[va.users == u].tolist())
        ranked.append([i for i in sorted(range(ds.n_items), key=lambda i: (-counts[i], i)) if i not in seen][:10])
        relevant.append(set(te.items[te.users == u].tolist()))
    for k in (5, 10):
        for name, value in reference_metrics(ranked, relevant, k).items():
            assert got[name] == pytest.approx(value), name
    assert got["score"] == got["ndcg@10"] and got["n_users"] == len(relevant)


def test_evaluate_judges_the_lists_it_is_handed():
    """The evaluator ranks nothing: hand-made lists get the metrics computed from them alone."""
    ds = make_synthetic_dataset(n_users=20, n_items=30, items_per_user=8, seed=2)
    users = ds.eval_users("test")
    rng = np.random.default_rng(0)
    items = np.stack([rng.permutation(ds.n_items)[:10] for _ in users])
    recs = Recommendations(users=users, items=items, scores=np.zeros(items.shape, np.float32),
                           paths=np.zeros((len(users), 0, 0), np.int64), split="test")
    got = evaluate(recs, ds, eval_settings(topk=(5, 10)), seconds=2.0).metrics
    te = ds.splits["test"]
    relevant = [set(te.items[te.users == u].tolist()) for u in users]
    for k in (5, 10):
        for name, value in reference_metrics(items.tolist(), relevant, k).items():
            assert got[name] == pytest.approx(value), name
    assert got["seconds"] == 2.0 and got["users_per_second"] == round(len(users) / 2.0, 1)
    with pytest.raises(ValueError, match="vocabulary"):  # lists with paths are judged with their vocabulary
        evaluate(Recommendations(users, items, recs.scores, np.zeros((len(users), 10, 3), np.int64), "test"),
                 ds, eval_settings(topk=(5, 10)))


@pytest.fixture(scope="module")
def model_and_data():
    ds = make_synthetic_dataset(n_users=30, n_items=60, items_per_user=16, seed=5)
    vocab = Vocabulary.from_graph(ds.graph)
    return ds, vocab, make_model(vocab)


def test_decoder_evaluation_reports_everything(model_and_data):
    ds, vocab, model = model_and_data
    model.train()
    ev = evaluate_model(model, ds, "test", eval_settings(topk=(5, 10)), vocab=vocab,
                        generation=generation(num_beams=6, max_num_beams=24))
    r = ev.metrics
    for k in (5, 10):
        for m in ("recall", "mrr", "ndcg", "hit", "precision"):
            assert 0.0 <= r[f"{m}@{k}"] <= 1.0
    assert r["path_coverage"] == 1.0 and r["valid_paths"] == 1.0
    assert r["relation_patterns"] >= 1 and r["n_users"] == len(np.unique(ds.splits["test"].users))
    assert r["score"] == r["ndcg@10"]
    assert model.training  # evaluation restores the training mode it found
    # the metrics are those of the returned lists, recomputed independently
    te = ds.splits["test"]
    relevant = [set(te.items[te.users == u].tolist()) for u in ev.recommendations.users]
    assert r["ndcg@10"] == pytest.approx(reference_metrics(ev.recommendations.items, relevant, 10)["ndcg@10"])


def test_metrics_do_not_depend_on_export_size(model_and_data):
    """Defect: test decoding used to ask for max(topk, export_topk, paths_per_user) items, which can
    widen the search for some users and change their top-10. Metrics now always decode max(topk)."""
    ds, vocab, model = model_and_data
    a = evaluate_model(model, ds, "test", eval_settings(), vocab=vocab, generation=generation(num_beams=4))
    b = evaluate_model(model, ds, "test", eval_settings(), vocab=vocab,
                       generation=generation(num_beams=4, paths_per_user=40))
    assert a.metrics["ndcg@10"] == b.metrics["ndcg@10"]
    assert np.array_equal(a.recommendations.items, b.recommendations.items)


def test_path_quality_detects_broken_paths(model_and_data):
    ds, vocab, model = model_and_data
    recs = recommend(model, ds, ds.eval_users("valid"), vocab=vocab, generation=generation(num_beams=6), n_return=5,
                     split="valid", batch_size=16)
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


def test_marginal_ranking_sums_path_probabilities(model_and_data):
    """ranking=marginal scores an item by log(sum of its decoded paths' probabilities): it is at
    least the best path's log-prob and, with every path kept (exhaustive search), equals an
    independent sum over the same paths."""
    ds, vocab, model = model_and_data
    users = ds.eval_users("test")[:4]
    kw = dict(vocab=vocab, n_return=ds.n_items, split="test", batch_size=4, return_item_scores=True)
    best = recommend(model, ds, users, generation=generation(num_beams=5000, ranking="logprob"), **kw)
    marg = recommend(model, ds, users, generation=generation(num_beams=5000, ranking="marginal"), **kw)
    finite = np.isfinite(best.item_scores)
    assert np.array_equal(finite, np.isfinite(marg.item_scores))
    assert (marg.item_scores[finite] >= best.item_scores[finite] - 1e-5).all()
    # independent check for one user: enumerate its paths' log-probs with the dense forward pass
    from kgglm.decode.constraints import GraphConstraint

    con = GraphConstraint(ds.graph, vocab, hop_length=3, excluded=ds.seen_items("test"))
    u = int(users[0])
    seqs = torch.tensor([[1, vocab.node_offset + u]])  # [BOS] U
    lp = torch.zeros(1)
    with torch.no_grad():
        for _ in range(6):
            logits, _ = model(seqs)
            scores = con(seqs, logits[:, -1])
            logp = torch.log_softmax(scores, -1)
            rows, toks = torch.isfinite(logp).nonzero(as_tuple=True)
            lp = lp[rows] + logp[rows, toks]
            seqs = torch.cat([seqs[rows], toks[:, None]], 1)
    items = (seqs[:, -1] - vocab.node_offset - ds.n_users).numpy()
    expected = np.full(ds.n_items, -np.inf)
    for i in np.unique(items):
        expected[i] = torch.logsumexp(lp[torch.as_tensor(items == i)], 0).item()
    np.testing.assert_allclose(marg.item_scores[0], expected, rtol=1e-4, atol=1e-4)
