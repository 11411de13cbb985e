"""Explanation modes: the knowledge mode keeps the ranking and shows decoded KG paths; the
knowledge-only constraint; relation preferences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cases import generation, make_model
from kgglm.decode.constraints import GraphConstraint
from kgglm.decode.recommend import recommend
from kgglm.evaluate.evaluator import path_quality
from kgglm.paths.vocab import RELATION_OFFSET, Vocabulary
from kgglm.synthetic.small import make_synthetic_dataset


@pytest.fixture(scope="module")
def setup():
    ds = make_synthetic_dataset(n_users=24, n_items=36, items_per_user=10, seed=3)
    vocab = Vocabulary.from_graph(ds.graph)
    return ds, vocab, make_model(vocab, initializer_range=0.3).eval()


def rec(setup, **gen):
    ds, vocab, model = setup
    return recommend(model, ds, ds.eval_users("test"), vocab=vocab, generation=generation(num_beams=8, **gen),
                     n_return=5, split="test", batch_size=8)


def middle_nodes(recs, vocab):
    return recs.paths[..., 2:-1:2] - vocab.node_offset  # nodes after the linked item, before the end


def test_knowledge_mode_keeps_ranking_and_shows_decoded_kg_paths(setup):
    ds, vocab, _ = setup
    best = rec(setup)
    know = rec(setup, explanation="knowledge", explanation_num_beams=64)
    assert np.array_equal(best.items, know.items) and np.allclose(best.scores, know.scores)
    q = path_quality(know, ds, vocab)
    assert q["valid_paths"] == 1.0 and q["path_coverage"] == 1.0
    entity = middle_nodes(know, vocab) >= ds.n_users + ds.n_items
    through_kg = entity.any(-1)[know.items >= 0]
    before = (middle_nodes(best, vocab) >= ds.n_users + ds.n_items).any(-1)[best.items >= 0]
    assert through_kg.mean() > before.mean() and through_kg.mean() >= 0.9
    # a replaced path carries its own (lower or equal) log-probability, the ranking score stays
    replaced = (know.paths != best.paths).any(-1)
    assert replaced.any()
    assert (know.path_scores[replaced] <= best.scores[replaced] + 1e-4).all()
    assert np.allclose(know.path_scores[~replaced], best.scores[~replaced])


def test_knowledge_only_constraint_forbids_users_inside(setup):
    ds, vocab, _ = setup
    recs = rec(setup, knowledge_only=True)
    assert (recs.items >= 0).any()
    inside = middle_nodes(recs, vocab)[recs.items >= 0]
    assert (inside >= ds.n_users).all()
    assert path_quality(recs, ds, vocab)["valid_paths"] == 1.0


def test_avoided_relations_are_used_only_without_alternative(setup):
    ds, vocab, _ = setup
    avoid = str(ds.relation_tokens[1])
    recs = rec(setup, explanation="knowledge", explanation_num_beams=64, avoid_relations=[avoid])
    rels = recs.paths[..., 1::2] - RELATION_OFFSET
    shown = recs.items >= 0
    uses_avoided = (rels == 1).any(-1)[shown]
    # every item of the synthetic KG is linked through both relations, so an alternative always exists
    assert uses_avoided.mean() < 0.05
    with pytest.raises(ValueError, match="unknown relation"):
        rec(setup, explanation="knowledge", avoid_relations=["no_such_relation"])


def test_constraint_options_prune_consistently(setup):
    """With knowledge_only, every legal prefix can still finish under the same rule (dead-end
    pruning uses the restricted edge set)."""
    ds, vocab, _ = setup
    c = GraphConstraint(ds.graph, vocab, hop_length=3, knowledge_only=True, forbidden_relations=[1])
    import torch

    seqs = torch.tensor([[1, vocab.node_offset + u] for u in range(ds.n_users)])
    for _ in range(6):
        rows, toks = c.allowed_pairs(seqs)
        assert rows.numel() > 0
        seqs = torch.cat([seqs[rows], toks[:, None]], 1)
    nodes = (seqs[:, 1::2] - vocab.node_offset).numpy()
    rels = (seqs[:, 2::2] - RELATION_OFFSET).numpy()
    assert (nodes[:, 2:-1] >= ds.n_users).all() and not (rels[:, 1:] == 1).any()
    assert (nodes[:, -1] >= ds.n_users).all() and (nodes[:, -1] < ds.n_users + ds.n_items).all()


@pytest.mark.parametrize("norm", ["legal", "items"])
def test_path_log_probs_reproduce_beam_scores(setup, norm):
    """Rescoring a decoded path gives the beam search's own score for it (logprob ranking), for both
    normalisations of the last hop; over all items a path is never more probable than over the
    legal unseen ones (a superset normalises it)."""
    import torch

    from kgglm.decode.beam_search import path_log_probs
    from kgglm.decode.recommend import make_constraint

    ds, vocab, model = setup
    best = rec(setup, last_hop_norm=norm)
    c = make_constraint(ds, vocab, split="test", hop_length=3)
    shown = best.items >= 0
    got = path_log_probs(model, c, torch.as_tensor(best.paths[shown]), norm).numpy()
    np.testing.assert_allclose(got, best.scores[shown], rtol=1e-4, atol=1e-4)
    legal = path_log_probs(model, c, torch.as_tensor(best.paths[shown]), "legal").numpy()
    assert (got <= legal + 1e-5).all()
    if norm == "items":
        assert (got < legal - 1e-3).any()
        # the dense (LogitsProcessor) path gives the same scores as the sparse one
        dense = path_log_probs(DenseOnly(model), c, torch.as_tensor(best.paths[shown]), norm).numpy()
        np.testing.assert_allclose(dense, got, rtol=1e-4, atol=1e-4)


class DenseOnly(torch.nn.Module):
    """The same model seen through ``forward`` only (no sparse head): the dense decoding path."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)


def test_post_processing_keeps_ranking_and_trades_probability(setup):
    """SIGIR 2022 post-processing: alpha=0 shows the most probable path; any alpha keeps the ranking
    and shows decoded, valid paths; alpha=1 picks, per item, the candidate with the best
    LIR + SEP + new-type objective (checked against a plain re-computation for one user)."""
    from kgglm.data.explanation_tables import ExplanationTables
    from kgglm.decode.postprocess import select_explanations

    ds, vocab, _ = setup
    best = rec(setup)
    zero = rec(setup, explanation="post", explanation_alpha=0.0, explanation_candidates=4)
    one = rec(setup, explanation="post", explanation_alpha=1.0, explanation_candidates=4)
    for r in (zero, one):
        assert np.array_equal(r.items, best.items) and np.allclose(r.scores, best.scores)
        assert path_quality(r, ds, vocab)["valid_paths"] == 1.0
    assert np.array_equal(zero.paths, best.paths)
    assert (one.paths != best.paths).any()
    # the selection rule on hand-made candidates: two items, two candidates each
    tables = ExplanationTables.from_dataset(ds)
    u = int(ds.eval_users("test")[0])
    train = ds.splits["train"]
    own = train.items[train.users == u][:2]
    off, ui = vocab.node_offset, RELATION_OFFSET
    ent = ds.n_users + ds.n_items  # first entity node
    item = lambda i: off + ds.n_users + int(i)  # noqa: E731
    paths = np.array([[[off + u, ui, item(own[0]), ui + 1, off + ent, ui + 1, item(5)],
                       [off + u, ui, item(own[1]), ui + 2, off + ent + 1, ui + 2, item(5)]],
                      [[off + u, ui, item(own[0]), ui + 1, off + ent, ui + 1, item(6)],
                       [off + u, ui, item(own[1]), ui + 2, off + ent + 1, ui + 2, item(6)]]])[None]
    scores = np.array([[[-1.0, -3.0], [-2.0, -2.5]]])
    chosen, _ = select_explanations(np.array([u]), paths, scores, alpha=1.0, tables=tables, vocab=vocab)
    expected, used = [], set()
    for _rank in range(2):  # plain re-computation of the greedy objective (same candidates per item)
        objs = []
        for c in range(2):
            l_item, shared, ptype = own[c], ent + c, 1 + c
            objs.append(tables.lir(u, l_item) + tables.sep[shared] + (ptype not in used))
        pick = int(np.argmax(objs))
        used.add(1 + pick)
        expected.append(pick)
    assert [int(np.flatnonzero((paths[0, j] == chosen[0, j]).all(-1))[0]) for j in range(2)] == expected
