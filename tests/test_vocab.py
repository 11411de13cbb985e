"""Vocabulary: fixed layout, encode/decode round trips, dataset tokens and names, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from kgglm.paths.sampling import sample_pretrain_paths, sample_user_paths
from kgglm.paths.vocab import BOS, EOS, PAD, RELATION_OFFSET, SPECIAL_TOKENS, Vocabulary


def test_layout_and_token_types(toy_dataset):
    v = Vocabulary.from_graph(toy_dataset.graph, "synthetic")
    g = toy_dataset.graph
    assert v.size == len(SPECIAL_TOKENS) + g.n_relations + g.n_nodes == len(v)
    types = v.token_types()
    assert types.shape == (v.size,)
    assert (types[:5] == 0).all() and (types[5:5 + g.n_relations] == 2).all() and (types[v.node_offset:] == 1).all()
    assert v.token_string(v.node_offset) == "U0"
    assert v.token_string(v.node_offset + g.n_users) == "I0"
    assert v.token_string(v.node_offset + g.n_users + g.n_items) == "E0"
    assert v.token_string(RELATION_OFFSET) == "R0"


def test_every_token_string_round_trips(toy_dataset):
    v = Vocabulary.from_graph(toy_dataset.graph)
    ids = np.arange(v.size)
    strings = v.token_strings(ids)
    assert len(set(strings.tolist())) == v.size
    assert [v.parse_token(s) for s in strings.tolist()] == ids.tolist()
    for bad in ("U999", "X1", "E-1"):
        with pytest.raises(KeyError):
            v.parse_token(bad)


def test_id_token_conversions_agree_with_the_token_strings(toy_dataset):
    """Every id <-> token conversion against token_string (the layout spelt out), on NumPy arrays and
    torch tensors alike (a tensor stays a tensor)."""
    import torch

    v = Vocabulary.from_graph(toy_dataset.graph)
    every = np.arange(-2, v.size + 3)
    names = [v.token_string(int(t)) if 0 <= t < v.size else "" for t in every]

    def expected(prefix, base=0):
        return np.array([int(n[1:]) + base if n[:1] == prefix else -1 for n in names])

    users, items = expected("U"), expected("I")
    nodes = np.where(users >= 0, users, np.where(items >= 0, items + v.n_users, -1))
    nodes = np.where(expected("E") >= 0, expected("E") + v.n_users + v.n_items, nodes)
    for tokens in (every, torch.from_numpy(every)):
        got = {"node": v.token_node(tokens), "item": v.token_item(tokens), "relation": v.token_relation(tokens)}
        assert all(isinstance(x, type(tokens)) for x in got.values())
        np.testing.assert_array_equal(np.asarray(got["node"]), nodes)
        np.testing.assert_array_equal(np.asarray(got["item"]), items)
        np.testing.assert_array_equal(np.asarray(got["relation"]), expected("R"))
    assert [v.token_string(int(t)) for t in v.item_token(np.arange(v.n_items))] == [f"I{i}" for i in range(v.n_items)]
    assert [v.token_string(int(t)) for t in v.user_token(torch.arange(3))] == ["U0", "U1", "U2"]
    assert [v.token_string(int(t)) for t in v.relation_token([0, 1])] == ["R0", "R1"]
    assert v.token_string(int(v.node_token(v.n_users + v.n_items))) == "E0"
    lo, hi = v.item_token_range
    assert (v.token_string(lo), v.token_string(hi - 1), v.token_string(hi)) == ("I0", f"I{v.n_items - 1}", "E0")
    assert v.user_token_range == (v.parse_token("U0"), v.parse_token("I0"))


def test_encode_decode_round_trip_with_padding(toy_dataset):
    g = toy_dataset.graph
    v = Vocabulary.from_graph(g)
    b = sample_pretrain_paths(g, paths_per_node=2, hop_range=(1, 4), seed=0)
    tok = v.encode_paths(b.nodes, b.relations)
    assert tok.shape == (len(b), 2 * 4 + 3)
    assert (tok[:, 0] == BOS).all()
    length = 2 * b.hops + 1
    assert (tok[np.arange(len(b)), length + 1] == EOS).all()
    assert ((tok == PAD).sum(axis=1) == tok.shape[1] - length - 2).all()
    # node/relation slots hold the arithmetic layout
    assert (tok[:, 1] == b.nodes[:, 0] + v.node_offset).all()
    assert (tok[:, 2] == b.relations[:, 0] + RELATION_OFFSET).all()
    nodes, rels = v.decode_paths(tok)
    assert np.array_equal(nodes, b.nodes) and np.array_equal(rels, b.relations)
    nodes, rels = v.decode_paths(v.encode_paths(b.nodes, b.relations, add_special=False))
    assert np.array_equal(nodes, b.nodes) and np.array_equal(rels, b.relations)


def test_decode_strict_rejects_misplaced_tokens(toy_dataset):
    v = Vocabulary.from_graph(toy_dataset.graph)
    good = [BOS, v.node_offset, RELATION_OFFSET, v.node_offset + 50, EOS]
    assert v.decode_paths(np.array([good]))[0].tolist() == [[0, 50]]
    bad = [BOS, v.node_offset, v.node_offset + 1, v.node_offset + 50, EOS]  # node where a relation goes
    with pytest.raises(ValueError, match="row 0"):
        v.decode_paths(np.array([bad]))


def test_dataset_tokens_and_names_exact(toy_dataset):
    ds = toy_dataset
    v = Vocabulary.from_graph(ds.graph, ds.name)
    b = sample_user_paths(ds.graph, ds.splits["train"], max_paths_per_user=3, seed=0)
    tok = v.encode_paths(b.nodes, b.relations)
    rows = v.to_dataset_tokens(tok, ds)
    names = v.to_dataset_tokens(tok, ds, names=True)
    for r, n, nodes, rels in zip(rows, names, b.nodes.tolist(), b.relations.tolist()):
        u, i = nodes[0], nodes[1] - ds.n_users
        assert r[0] == ds.user_tokens[u] and r[1] == ds.relation_tokens[0] == "[UI-Relation]"
        assert r[2] == ds.item_tokens[i] and n[2] == ds.item_names[i]
        assert r[3] == ds.relation_tokens[rels[1]]
        # original tokens map back to the same ids, given each node's kind
        kinds = ["user" if x < ds.n_users else "item" if x < ds.n_users + ds.n_items else "entity" for x in nodes]
        back = [int(v.nodes_from_dataset_tokens(ds, [t], k)[0]) for t, k in zip(r[0::2], kinds)]
        assert back == nodes
        assert v.relations_from_dataset_tokens(ds, r[1::2]).tolist() == rels
    table = v.dataset_token_table(ds)
    assert table[:5].tolist() == list(SPECIAL_TOKENS) and table.shape == (v.size,)
    with pytest.raises(KeyError, match="unknown user"):
        v.nodes_from_dataset_tokens(ds, ["nobody"], "user")
    other = Vocabulary(ds.n_users + 1, ds.n_items, ds.n_entities, ds.n_relations)
    with pytest.raises(ValueError, match="expects"):
        other.to_dataset_tokens(tok, ds)


def test_save_load(tmp_path, toy_dataset):
    v = Vocabulary.from_graph(toy_dataset.graph, "synthetic")
    path = v.save(tmp_path)
    assert path.name == "vocab.json" and not list(tmp_path.glob("*.tmp"))
    assert Vocabulary.load(tmp_path) == v


def test_real_dataset_round_trip(shared_data):
    from kgglm.data import load_dataset

    ds = load_dataset("ml-100k", data_path=shared_data)
    v = Vocabulary.from_graph(ds.graph, ds.name)
    v.check_dataset(ds)
    b = sample_pretrain_paths(ds.graph, seed=1)[:500]
    tok = v.encode_paths(b.nodes, b.relations)
    nodes, rels = v.decode_paths(tok)
    assert np.array_equal(nodes, b.nodes) and np.array_equal(rels, b.relations)
    node_tok = ds.node_tokens()
    for row, n, r in zip(v.to_dataset_tokens(tok, ds), nodes.tolist(), rels.tolist()):
        assert row[0::2] == [node_tok[x] for x in n] and row[1::2] == [ds.relation_tokens[x] for x in r]
    # entity tokens are Freebase ids; items are linked to theirs
    assert str(ds.entity_tokens[0]).startswith("m.")
    parsed = [v.parse_token(s) for s in v.token_strings(tok[0]).tolist()]
    assert parsed == tok[0].tolist()


@pytest.mark.parametrize("hops", [3, 5])
def test_output_slices_hold_every_target_of_both_corpora(toy_dataset, hops):
    """typed_output: each position's range contains every real target the samplers produce."""
    v = Vocabulary.from_graph(toy_dataset.graph)
    corpora = {
        "pretrain": sample_pretrain_paths(toy_dataset.graph, hop_range=(1, hops), seed=0),
        "finetune": sample_user_paths(toy_dataset.graph, toy_dataset.splits["train"], hop_length=hops, seed=0),
    }
    for stage, batch in corpora.items():
        tokens = v.encode_paths(batch.nodes, batch.relations)
        sl = v.output_slices(tokens.shape[1], stage)
        target = tokens[:, 1:]
        real = target != PAD
        assert ((target >= sl[:, 0]) & (target < sl[:, 1]) | ~real).all(), stage
    ft = v.output_slices(2 * 3 + 3, "finetune")
    users = (v.node_offset, v.node_offset + v.n_users)
    items = (v.node_offset + v.n_users, v.node_offset + v.n_users + v.n_items)
    assert tuple(ft[0]) == users and tuple(ft[2]) == items and tuple(ft[6]) == items
    assert tuple(ft[4]) == (v.node_offset, v.size) and tuple(ft[7]) == (0, v.node_offset)  # EOS after I'
    with pytest.raises(ValueError, match="stage"):
        v.output_slices(9, "other")
