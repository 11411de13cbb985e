"""Path sampling: every path is a real graph path, rules hold, and the sampled set matches brute force."""

from __future__ import annotations

import numpy as np
import pytest

from kgglm.data.dataset import Interactions, build_graph
from kgglm.data.graph import CollaborativeGraph
from kgglm.paths.sampling import PathBatch, sample_pretrain_paths, sample_user_paths


# ------------------------------------------------------------------------------------ helpers
def assert_real_paths(graph: CollaborativeGraph, batch: PathBatch) -> None:
    """Each consecutive node-relation-node is an edge; padding only at the end."""
    nodes, rels = batch.nodes, batch.relations
    assert nodes.shape[1] == rels.shape[1] + 1
    real = rels >= 0
    assert (real[:, :-1] | ~real[:, 1:]).all(), "padding must come after the real hops"
    assert ((nodes[:, 1:] >= 0) == real).all() and (nodes[:, 0] >= 0).all()
    h = np.flatnonzero(real.ravel())
    src, dst = nodes[:, :-1].ravel()[h], nodes[:, 1:].ravel()[h]
    assert graph.has_edge(src, rels.ravel()[h], dst).all()


def rows(batch: PathBatch) -> set[tuple]:
    return {tuple(n) + tuple(r) for n, r in zip(batch.nodes.tolist(), batch.relations.tolist())}


def adjacency(graph: CollaborativeGraph, kg_only: bool) -> list[list[tuple[int, int]]]:
    out = []
    for v in range(graph.n_nodes):
        nb, rl = graph.neighbors(v)
        out.append([(int(n), int(r)) for n, r in zip(nb, rl) if not (kg_only and r == 0)])
    return out


def brute_walks(graph: CollaborativeGraph, hops: int, kg_only: bool = True) -> set[tuple]:
    """Every walk the pre-training rules allow (independent pure-Python enumeration)."""
    adj = adjacency(graph, kg_only)
    found = set()

    def extend(nodes, rels):
        if len(rels) == hops:
            found.add(tuple(nodes) + tuple(rels))
            return
        options = adj[nodes[-1]]
        if len(nodes) > 1 and any(n != nodes[-2] for n, _ in options):
            options = [(n, r) for n, r in options if n != nodes[-2]]
        if not options:  # dead end: keep what we have (pad to full length)
            pad = hops - len(rels)
            found.add(tuple(nodes) + (-1,) * pad + tuple(rels) + (-1,) * pad)
            return
        for n, r in options:
            extend(nodes + [n], rels + [r])

    for v in range(graph.n_nodes):
        if adj[v]:
            extend([v], [])
    return found


def brute_user_paths(graph, train: Interactions, hops: int, collaborative: bool) -> set[tuple]:
    """Every fine-tuning path of the documented rule, by brute force over the graph."""
    adj_all, adj_kg = adjacency(graph, False), adjacency(graph, True)
    items_of = {}
    for u, i in zip(train.users.tolist(), train.items.tolist()):
        items_of.setdefault(u, set()).add(i + graph.n_users)
    found = set()

    def extend(user, nodes, rels):
        if len(rels) == hops:
            if nodes[-1] in items_of[user] and len(set(nodes)) == len(nodes):
                found.add(tuple(nodes) + tuple(rels))
            return
        options = adj_all[nodes[-1]] if collaborative else adj_kg[nodes[-1]]
        if any(n != nodes[-2] for n, _ in options):
            options = [(n, r) for n, r in options if n != nodes[-2]]
        for n, r in options:
            extend(user, nodes + [n], rels + [r])

    for u, items in items_of.items():
        for i in items:
            extend(u, [u, i], [0])
    return found


def small_kg() -> CollaborativeGraph:
    """2 users, 3 items, 3 entities. E0 links all items, E1 only I0 (a leaf), E2 unused (isolated);
    I2 has no KG edge; I0 and I1 are also linked by an item-item relation."""
    u, i, e = 2, 3, 3
    I = lambda k: u + k  # noqa: E731, E741
    E = lambda k: u + i + k  # noqa: E731
    heads = [0, 0, 1, 1, I(0), I(1), I(0), I(0)]
    rels = [0, 0, 0, 0, 1, 1, 2, 3]
    tails = [I(0), I(1), I(1), I(2), E(0), E(0), E(1), I(1)]
    return CollaborativeGraph.from_edges(u, i, e, 4, np.array(heads), np.array(rels), np.array(tails))


# ------------------------------------------------------------------------------------ pre-training
def test_pretrain_starts_at_every_kg_node_and_walks_real_paths():
    g = small_kg()
    b = sample_pretrain_paths(g, paths_per_node=1, seed=1)
    assert_real_paths(g, b)
    assert sorted(b.nodes[:, 0].tolist()) == [2, 3, 5, 6]  # I0, I1, E0, E1 (not users, I2, E2)
    assert (b.relations != 0).all()  # no user-item edge by default
    assert (b.hops == 3).all()


def test_pretrain_sampled_set_equals_brute_force():
    g = small_kg()
    b = sample_pretrain_paths(g, paths_per_node=400, seed=3)
    assert len(rows(b)) == len(b), "duplicates must be dropped"
    assert rows(b) == brute_walks(g, 3)


def test_pretrain_no_back_step_when_another_neighbour(toy_dataset):
    g = toy_dataset.graph
    b = sample_pretrain_paths(g, paths_per_node=3, hop_range=(2, 4), seed=5)
    assert_real_paths(g, b)
    adj = adjacency(g, kg_only=True)
    back = np.argwhere((b.nodes[:, 2:] == b.nodes[:, :-2]) & (b.nodes[:, 2:] >= 0))
    for p, h in back.tolist():  # a back-step is allowed only when the middle node is a leaf
        mid, prev = b.nodes[p, h + 1], b.nodes[p, h]
        assert all(n == prev for n, _ in adj[mid])
    assert sorted(set(b.hops.tolist())) == [2, 3, 4]
    assert len(rows(b)) == len(b)


def test_pretrain_include_users_and_brute_force():
    g = small_kg()
    b = sample_pretrain_paths(g, paths_per_node=600, hop_range=(2, 2), include_users=True, seed=0)
    assert_real_paths(g, b)
    assert {0, 1} <= set(b.nodes[:, 0].tolist()) and (b.relations == 0).any()
    assert rows(b) == brute_walks(g, 2, kg_only=False)
    b = sample_pretrain_paths(g, paths_per_node=600, hop_range=(2, 2), include_users=True, seed=0,
                              ui_share=None)
    assert rows(b) == brute_walks(g, 2, kg_only=False)


def test_pretrain_reproducible_and_seed_dependent(toy_dataset):
    g = toy_dataset.graph
    a = sample_pretrain_paths(g, paths_per_node=2, hop_range=(1, 3), seed=11)
    b = sample_pretrain_paths(g, paths_per_node=2, hop_range=(1, 3), seed=11)
    c = sample_pretrain_paths(g, paths_per_node=2, hop_range=(1, 3), seed=12)
    assert np.array_equal(a.nodes, b.nodes) and np.array_equal(a.relations, b.relations)
    assert not (a.nodes.shape == c.nodes.shape and np.array_equal(a.nodes, c.nodes))


def test_pretrain_leaf_walks_back_and_bad_args():
    # one KG edge I0 - E0: the previous node is the only neighbour, so the walk steps back
    g = CollaborativeGraph.from_edges(1, 1, 1, 2, np.array([1]), np.array([1]), np.array([2]))
    b = sample_pretrain_paths(g, hop_range=(3, 3), seed=0)
    assert rows(b) == {(1, 2, 1, 2, 1, 1, 1), (2, 1, 2, 1, 1, 1, 1)}
    with pytest.raises(ValueError):
        sample_pretrain_paths(g, hop_range=(0, 2), seed=0)
    with pytest.raises(ValueError):
        sample_pretrain_paths(g, paths_per_node=0, seed=0)


# ------------------------------------------------------------------------------------ fine-tuning
def check_user_paths(g, train, batch, hops, cap, other_splits=(), graph_train=None):
    """``train``: the users' training items; ``graph_train``: all training edges in the graph."""
    assert_real_paths(g, batch)
    assert batch.nodes.shape == (len(batch), hops + 1) and (batch.hops == hops).all()
    n, u = batch.nodes, batch.nodes[:, 0]
    assert (u < g.n_users).all(), "paths start at a user"
    train_pairs = set(zip(train.users.tolist(), (train.items + g.n_users).tolist()))
    assert all((a, b) in train_pairs for a, b in zip(u.tolist(), n[:, 1].tolist()))
    assert all((a, b) in train_pairs for a, b in zip(u.tolist(), n[:, -1].tolist()))
    assert (n[:, 1] != n[:, -1]).all() and (batch.relations[:, 0] == 0).all()
    assert len(rows(batch)) == len(batch)
    assert np.bincount(u).max(initial=0) <= cap
    # every user-item hop is a training interaction, never a held-out one
    held = set()
    for s in other_splits:
        held |= set(zip(s.users.tolist(), (s.items + g.n_users).tolist()))
    if graph_train is not None:
        train_pairs = set(zip(graph_train.users.tolist(), (graph_train.items + g.n_users).tolist()))
    held -= train_pairs
    ui = batch.relations == 0
    a, b = n[:, :-1][ui], n[:, 1:][ui]
    pairs = {(min(x, y), max(x, y)) for x, y in zip(a.tolist(), b.tolist())}
    assert pairs <= train_pairs and not (pairs & held)


@pytest.mark.parametrize("last_hop", ["walk", "direct"])
@pytest.mark.parametrize("hops,collaborative", [(3, True), (3, False), (5, True), (5, False)])
def test_user_paths_equal_brute_force_when_cap_is_large(toy_dataset, hops, collaborative, last_hop):
    """Both ways of drawing the last hop reach the same set of paths (the brute-force set)."""
    ds = toy_dataset
    if hops == 5:  # keep brute force small: fewer users
        ds = _sub_dataset(ds, n_users=9)
    train = ds.splits["train"]
    b = sample_user_paths(ds.graph, train, max_paths_per_user=100_000, hop_length=hops,
                          collaborative=collaborative, seed=7, last_hop=last_hop)
    check_user_paths(ds.graph, train, b, hops, 100_000, (ds.splits["valid"], ds.splits["test"]))
    expected = brute_user_paths(ds.graph, train, hops, collaborative)
    assert rows(b) <= expected
    assert len(rows(b)) >= 0.97 * len(expected)  # random walks find (nearly) all of them
    if not collaborative:
        assert (b.relations[:, 1:] != 0).all()
    else:
        assert (b.relations[:, 1:] == 0).any() and (b.relations[:, 1:] != 0).any()


def test_user_paths_cap_and_spread(toy_dataset):
    ds = toy_dataset
    train = ds.splits["train"]
    b = sample_user_paths(ds.graph, train, max_paths_per_user=6, seed=1)
    check_user_paths(ds.graph, train, b, 3, 6, (ds.splits["valid"], ds.splits["test"]))
    per_user = np.bincount(b.nodes[:, 0], minlength=ds.n_users)
    available = np.bincount([p[0] for p in brute_user_paths(ds.graph, train, 3, True)], minlength=ds.n_users)
    assert np.array_equal(per_user, np.minimum(available, 6))
    assert np.all(np.diff(b.nodes[:, 0]) >= 0), "grouped by user"


def test_user_paths_hop7_reproducible_and_errors(toy_dataset):
    g, train = toy_dataset.graph, toy_dataset.splits["train"]
    a = sample_user_paths(g, train, max_paths_per_user=20, hop_length=7, seed=3)
    b = sample_user_paths(g, train, max_paths_per_user=20, hop_length=7, seed=3)
    check_user_paths(g, train, a, 7, 20)
    assert len(a) > 0 and np.array_equal(a.nodes, b.nodes) and np.array_equal(a.relations, b.relations)
    c = sample_user_paths(g, train, max_paths_per_user=20, hop_length=7, seed=4)
    assert not np.array_equal(a.nodes, c.nodes)
    for bad in (2, 4, 1):
        with pytest.raises(ValueError):
            sample_user_paths(g, train, hop_length=bad, seed=0)


@pytest.mark.parametrize("collaborative", [True, False])
def test_user_paths_dead_ends_and_brute_force_on_hand_made_graph(collaborative):
    g = small_kg()  # I2 has no KG edge: KG-only walks through it die
    train = Interactions(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 2]))
    b = sample_user_paths(g, train, max_paths_per_user=1000, collaborative=collaborative, seed=2)
    check_user_paths(g, train, b, 3, 1000)
    assert rows(b) == brute_user_paths(g, train, 3, collaborative)
    assert len(b) > 0


def test_user_with_one_train_item_gets_no_path():
    # user 0 has items 0 and 1, user 1 only item 1; both items share entity E0
    train = Interactions(np.array([0, 0, 1]), np.array([0, 1, 1]))
    g = build_graph(2, 2, 1, 2, train, np.array([2, 3]), np.array([1, 1]), np.array([4, 4]))
    b = sample_user_paths(g, train, max_paths_per_user=10, seed=0)
    assert set(b.nodes[:, 0].tolist()) == {0}
    assert rows(b) == brute_user_paths(g, train, 3, True) == {(0, 2, 4, 3, 0, 1, 1), (0, 3, 4, 2, 0, 1, 1)}


# ------------------------------------------------------------------------------------ real data
@pytest.fixture(scope="module")
def ml100k(shared_data):
    from kgglm.data import load_dataset

    return load_dataset("ml-100k", data_path=shared_data)


def test_real_pretrain_corpus(ml100k):
    g = ml100k.graph
    b = sample_pretrain_paths(g, seed=2024)
    assert_real_paths(g, b)
    kg_deg = np.bincount(ml100k.kg_heads, minlength=g.n_nodes) + np.bincount(ml100k.kg_tails, minlength=g.n_nodes)
    starts = np.flatnonzero(kg_deg > 0)
    assert np.array_equal(np.sort(b.nodes[:, 0]), starts)  # one walk per KG node, all distinct here
    assert len(b) > 34_000 and (b.relations != 0).all() and (b.nodes >= g.n_users).all()
    assert len(rows(b)) == len(b)


def test_real_user_paths(ml100k):
    g, sp = ml100k.graph, ml100k.splits
    users = np.arange(0, ml100k.n_users, 7)  # a subset of users keeps the check fast
    keep = np.isin(sp["train"].users, users)
    train = Interactions(sp["train"].users[keep], sp["train"].items[keep])
    b = sample_user_paths(g, train, max_paths_per_user=20, seed=2024)
    check_user_paths(g, train, b, 3, 20, (sp["valid"], sp["test"]), graph_train=sp["train"])
    assert set(b.nodes[:, 0].tolist()) == set(users.tolist())
    assert (np.bincount(b.nodes[:, 0])[users] == 20).all()
    assert (b.relations[:, 1] == 0).any() and (b.relations[:, 1] != 0).any()  # both path kinds
    b2 = sample_user_paths(g, train, max_paths_per_user=20, seed=2024)
    assert np.array_equal(b.nodes, b2.nodes)


def _sub_dataset(ds, n_users: int):
    """The first ``n_users`` users of a dataset (graph rebuilt from their training interactions)."""
    from dataclasses import replace

    splits = {}
    for name, s in ds.splits.items():
        m = s.users < n_users
        splits[name] = Interactions(s.users[m], s.items[m])
    graph = build_graph(n_users, ds.n_items, ds.n_entities, ds.n_relations, splits["train"],
                        ds.kg_heads - ds.n_users + n_users, ds.kg_relations, ds.kg_tails - ds.n_users + n_users)
    return replace(ds, user_tokens=ds.user_tokens[:n_users], splits=splits, graph=graph)


def test_exact_back_step_fallback(monkeypatch):
    """With no rejection rounds every walk goes through the exact fallback: never back, all options."""
    import kgglm.paths.walker as walker

    monkeypatch.setattr(walker, "_BACKSTEP_ROUNDS", 0)
    # E0 - I0 by relations 1 and 2 (two edges back), I0 - E1 by relation 1; E2 - I1 alone (leaf)
    g = CollaborativeGraph.from_edges(0, 2, 3, 3, np.array([2, 2, 0, 1]), np.array([1, 2, 1, 1]),
                                      np.array([0, 0, 3, 4]))
    b = sample_pretrain_paths(g, paths_per_node=300, hop_range=(2, 2), seed=0)
    assert_real_paths(g, b)
    assert rows(b) == brute_walks(g, 2)
    from_e0 = b.nodes[b.nodes[:, 0] == 2]
    assert (from_e0[:, 2] == 3).all()  # E0 -> I0 -> E1, never back to E0
