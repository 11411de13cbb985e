"""recommend(): batching, defaults, explanations and the JSON-lines export round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cases import generation, make_model
from kgglm.decode.explain import explain
from kgglm.decode.recommend import read_recommendations, recommend, write_recommendations
from kgglm.paths.vocab import RELATION_OFFSET, Vocabulary
from kgglm.synthetic.small import make_synthetic_dataset


@pytest.fixture(scope="module")
def setup():
    ds = make_synthetic_dataset(n_users=20, n_items=45, items_per_user=12, seed=7)
    vocab = Vocabulary.from_graph(ds.graph)
    model = make_model(vocab, initializer_range=0.3).eval()
    return ds, vocab, model


def rec(model, ds, vocab, users=None, *, split="test", topk=10, batch_size=16, return_item_scores=False, **gen):
    users = ds.eval_users(split) if users is None else users
    return recommend(model, ds, users, vocab=vocab, generation=generation(**gen), n_return=topk, split=split,
                     batch_size=batch_size, return_item_scores=return_item_scores)


def test_batches_equal_one_batch_and_default_users(setup):
    ds, vocab, model = setup
    a = rec(model, ds, vocab, split="test", topk=5, num_beams=6, batch_size=3, return_item_scores=True,
            max_num_beams=24)
    b = rec(model, ds, vocab, split="test", topk=5, num_beams=6, batch_size=100, max_num_beams=24)
    assert np.array_equal(a.users, np.unique(ds.splits["test"].users))
    assert np.array_equal(a.items, b.items) and np.allclose(a.scores, b.scores, atol=1e-5)
    assert a.item_scores.shape == (len(a.users), ds.n_items)
    assert a.paths.shape == (len(a.users), 5, 7) and a.hop_length == 3
    # test split: neither train nor valid items are recommended
    for s in ("train", "valid"):
        inter = ds.splits[s]
        seen = set(zip(inter.users.tolist(), inter.items.tolist()))
        rows, ranks = np.nonzero(a.items >= 0)
        assert not any((int(a.users[r]), int(a.items[r, k])) in seen for r, k in zip(rows, ranks))


def test_n_return_sets_the_list_length(setup):
    ds, vocab, model = setup
    r = rec(model, ds, vocab, [0, 1], split="valid", topk=8, num_beams=6)
    assert r.items.shape == (2, 8)


def test_explanation_text(setup):
    ds, vocab, model = setup
    r = rec(model, ds, vocab, [2], split="test", topk=1, num_beams=4)
    path = r.paths[0, 0]
    text = explain(ds, vocab, path)
    nodes = path[0::2] - vocab.node_offset
    assert text.startswith(f"user {ds.user_tokens[2]} watched {ds.item_names[nodes[1] - ds.n_users].replace(' ', '_')}")
    assert text.count(" -> ") == 2
    rel2 = ds.relation_tokens[path[3] - RELATION_OFFSET]
    assert f"-> {'watched' if path[3] == RELATION_OFFSET else rel2} " in text
    assert text.endswith(ds.item_names[r.items[0, 0]].replace(" ", "_"))


def test_export_round_trip(setup, tmp_path):
    ds, vocab, model = setup
    r = rec(model, ds, vocab, split="test", topk=4, num_beams=6)
    out = write_recommendations(r, ds, vocab, tmp_path / "recs" / "test.jsonl")
    assert not list((tmp_path / "recs").glob("*.tmp"))
    lines = out.read_text().splitlines()
    assert len(lines) == int((r.items >= 0).sum())
    first = json.loads(lines[0])
    assert first["user"] == ds.user_tokens[r.users[0]] and first["rank"] == 1
    assert first["item"] == ds.item_tokens[r.items[0, 0]]
    assert first["path"][0] == ds.user_tokens[r.users[0]] and first["path"][1] == ds.relation_tokens[0]
    assert first["explanation"] == explain(ds, vocab, r.paths[0, 0])
    back = read_recommendations(out)
    assert np.array_equal(back.users, r.users) and np.array_equal(back.items, r.items)
    assert np.array_equal(back.scores, r.scores) and np.array_equal(back.paths, r.paths)
    assert back.split == "test"


def test_reader_names_bad_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"user_index": 1}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        read_recommendations(p)
