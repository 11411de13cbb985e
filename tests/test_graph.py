"""The CSR collaborative graph: symmetry, sorted rows, has_edge, and no valid/test edge (train only)."""

from __future__ import annotations

import numpy as np
import pytest

from cases import is_symmetric
from kgglm.data import load_dataset
from kgglm.data.graph import UI_RELATION, CollaborativeGraph


@pytest.fixture(scope="module")
def ml100k(shared_data):
    return load_dataset("ml-100k", data_path=shared_data)


def random_graph(seed=0, n_users=5, n_items=6, n_entities=7, n_rel=4, n_edges=40):
    rng = np.random.default_rng(seed)
    n = n_users + n_items + n_entities
    heads, rels, tails = rng.integers(0, n, n_edges), rng.integers(0, n_rel, n_edges), rng.integers(0, n, n_edges)
    return CollaborativeGraph.from_edges(n_users, n_items, n_entities, n_rel, heads, rels, tails), (heads, rels, tails)


def test_csr_matches_independent_edge_set():
    g, (heads, rels, tails) = random_graph()
    expected = {(int(h), int(r), int(t)) for h, r, t in zip(heads, rels, tails)}
    expected |= {(t, r, h) for h, r, t in expected}
    src = np.repeat(np.arange(g.n_nodes), np.diff(g.indptr))
    got = list(zip(src.tolist(), g.relation.tolist(), g.neighbor.tolist()))
    assert len(got) == len(set(got)) == g.n_edges  # no duplicates stored
    assert set(got) == expected
    for node in range(g.n_nodes):  # rows sorted by (relation, neighbor)
        nb, rel = g.neighbors(node)
        keys = rel * g.n_nodes + nb
        assert (np.diff(keys) > 0).all()


def test_has_edge_vectorised_and_out_of_range():
    g, _ = random_graph(seed=1)
    rng = np.random.default_rng(2)
    src, rel, dst = rng.integers(-2, g.n_nodes + 2, 500), rng.integers(-1, 5, 500), rng.integers(-2, g.n_nodes + 2, 500)
    src_all = np.repeat(np.arange(g.n_nodes), np.diff(g.indptr))
    edges = set(zip(src_all.tolist(), g.relation.tolist(), g.neighbor.tolist()))
    expected = [(int(s), int(r), int(d)) in edges for s, r, d in zip(src, rel, dst)]
    assert g.has_edge(src, rel, dst).tolist() == expected
    assert is_symmetric(g)


def test_empty_graph():
    g = CollaborativeGraph.from_edges(2, 2, 0, 1, [], [], [])
    assert g.n_edges == 0 and not g.has_edge([0], [0], [2])[0]


def test_ml100k_graph_is_symmetric_and_has_only_train_user_item_edges(ml100k):
    g = ml100k.graph
    assert is_symmetric(g)
    assert g.indptr[-1] == g.n_edges and (np.diff(g.indptr) >= 0).all()
    assert g.neighbor.dtype == np.int64 and len(g.indptr) == g.n_nodes + 1  # O(edges + nodes)
    train = ml100k.splits["train"]
    assert g.has_edge(train.users, np.zeros(len(train), int), g.item_node(train.items)).all()
    assert g.has_edge(g.item_node(train.items), np.zeros(len(train), int), train.users).all()
    for name in ("valid", "test"):
        part = ml100k.splits[name]
        assert len(part) > 0
        assert not g.has_edge(part.users, np.zeros(len(part), int), g.item_node(part.items)).any()
        assert not g.has_edge(g.item_node(part.items), np.zeros(len(part), int), part.users).any()
    # user-item relation edges are exactly the train pairs, both ways
    assert int((g.relation == UI_RELATION).sum()) == 2 * len(train)
    # user nodes only connect through the user-item relation, to items
    src = np.repeat(np.arange(g.n_nodes), np.diff(g.indptr))
    from_users = src < g.n_users
    assert (g.relation[from_users] == UI_RELATION).all()
    assert (g.node_kind(g.neighbor[from_users]) == 1).all()
    # every KG triple is an edge in both directions
    assert g.has_edge(ml100k.kg_heads, ml100k.kg_relations, ml100k.kg_tails).all()
    assert g.has_edge(ml100k.kg_tails, ml100k.kg_relations, ml100k.kg_heads).all()
    assert (ml100k.kg_relations >= 1).all()
