"""The explained-recommendation records: one shape for the export, the CLI and the server, checked
against independent per-token computations."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from cases import generation, make_model
from kgglm.decode.explain import UI_LABEL, ExplainedRecommendation, explain, explained, explained_records, explanations
from kgglm.decode.recommend import recommend, write_recommendations
from kgglm.paths.vocab import PAD, RELATION_OFFSET, Vocabulary
from kgglm.synthetic.small import make_synthetic_dataset


@pytest.fixture(scope="module")
def setup():
    ds = make_synthetic_dataset(n_users=20, n_items=45, items_per_user=12, seed=7)
    vocab = Vocabulary.from_graph(ds.graph)
    model = make_model(vocab, initializer_range=0.3).eval()
    recs = recommend(model, ds, ds.eval_users("test"), vocab=vocab, generation=generation(num_beams=6),
                     n_return=4, split="test", batch_size=16)
    return ds, vocab, recs


def reference_text(ds, vocab, toks, phrases, ui_label="watched") -> str:
    """The explanation of one path, token by token (the former implementation)."""
    toks = [int(t) for t in toks]
    if PAD in toks:
        return ""
    off, n_users = vocab.node_offset, ds.n_users

    def node(t):
        i = t - off
        return f"user {ds.node_names()[i]}" if i < n_users else str(ds.node_names()[i]).replace(" ", "_")

    def rel(t, nxt):
        r = t - RELATION_OFFSET
        name = str(ds.relation_tokens[r])
        if r == 0:
            label = phrases.get(name, ui_label)
            return f"{label} by" if 0 <= nxt - off < n_users else label
        return phrases.get(name, name)

    parts = [f"{node(toks[0])} {rel(toks[1], toks[2])} {node(toks[2])}"]
    parts += [f"{rel(toks[i], toks[i + 1])} {node(toks[i + 1])}" for i in range(3, len(toks) - 1, 2)]
    return " -> ".join(parts)


@pytest.mark.parametrize("phrases", [None, {"rel_1": "is like", "[UI-Relation]": "liked"}])
def test_explanations_equal_the_token_by_token_text(setup, phrases):
    ds, vocab, recs = setup
    paths = recs.paths.reshape(-1, recs.paths.shape[-1])
    # hops through users ("watched by") and a padded path must be among the cases
    users_inside = (vocab.token_node(paths[:, 2::2]) < ds.n_users).any(axis=1)
    assert users_inside.any()
    paths = np.concatenate([paths, paths[:1]])
    paths[-1, 3:] = PAD
    got = explanations(ds, vocab, paths, phrases)
    want = [reference_text(ds, vocab, p, phrases or {}) for p in paths]
    assert got.tolist() == want and got[-1] == ""
    assert f"{'liked' if phrases else 'watched'} by user" in " ".join(want)
    assert explain(ds, vocab, paths[0], phrases) == want[0]


def test_records_match_the_recommendations(setup):
    ds, vocab, recs = setup
    lists = explained_records(recs, ds, vocab)
    assert [x.user_index for x in lists] == recs.users.tolist()
    entity_start = ds.n_users + ds.n_items
    for r, lst in enumerate(lists):
        assert lst.user == ds.user_tokens[recs.users[r]] and len(lst.recommendations) == (recs.items[r] >= 0).sum()
        for c, rec in enumerate(lst.recommendations):
            toks = recs.paths[r, c]
            nodes = [t - vocab.node_offset for t in toks[0::2].tolist()]
            rels = [t - RELATION_OFFSET for t in toks[1::2].tolist()]
            assert rec.rank == c + 1 and rec.item_index == recs.items[r, c] and rec.user == lst.user
            assert rec.item == ds.item_tokens[rec.item_index] and rec.title == ds.item_names[rec.item_index]
            assert rec.score == float(recs.scores[r, c]) and rec.path_score == float(recs.path_scores[r, c])
            assert list(rec.path_token_ids) == toks.tolist()
            assert list(rec.path) == vocab.to_dataset_tokens(toks, ds)[0]
            assert [n.id for n in rec.nodes] == [str(ds.node_tokens()[n]) for n in nodes]
            assert [n.name for n in rec.nodes] == [str(ds.node_names()[n]) for n in nodes]
            kinds = ["user" if n < ds.n_users else "item" if n < entity_start else "entity" for n in nodes]
            assert [n.kind for n in rec.nodes] == kinds
            assert list(rec.relations) == [UI_LABEL if x == 0 else str(ds.relation_tokens[x]) for x in rels]
            assert rec.explanation_source == ("knowledge" if "entity" in kinds[2:-1] else "collaborative")
            assert rec.explanation == reference_text(ds, vocab, toks, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        lists[0].recommendations[0].rank = 9


def test_lists_stop_at_the_first_missing_item_and_keep_the_requested_rows(setup):
    ds, vocab, recs = setup
    cut = dataclasses.replace(recs, items=recs.items.copy())
    cut.items[1, 2:] = -1
    lists = explained_records(cut, ds, vocab, rows=[1, 0], k=3)
    assert [x.user_index for x in lists] == [cut.users[1], cut.users[0]]
    assert [len(x.recommendations) for x in lists] == [2, 3]
    shown = explained(cut, ds, vocab, limit=2, k=3)
    assert [len(x["recommendations"]) for x in shown] == [3, 2]
    assert set(shown[0]) == {"user", "recommendations"}


def test_export_lines_are_the_records(setup, tmp_path):
    ds, vocab, recs = setup
    out = write_recommendations(recs, ds, vocab, tmp_path / "recs.jsonl", phrases={"rel_1": "is like"})
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    records = [rec for lst in explained_records(recs, ds, vocab, phrases={"rel_1": "is like"})
               for rec in lst.recommendations]
    assert len(lines) == len(records) == int((recs.items >= 0).sum())
    fields = [f.name for f in dataclasses.fields(ExplainedRecommendation)]
    for line, rec in zip(lines, records):
        assert list(line) == [*fields, "split", "topk"]
        assert line == {**rec.to_dict(), "split": "test", "topk": 4}
