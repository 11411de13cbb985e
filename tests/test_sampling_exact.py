"""Fine-tuning paths with ``last_hop='direct'``: exact enumeration for the users it is cheap for.

Checked against independent pure-Python references: the brute-force path set (per-user counts are
exactly ``min(cap, available)``), and the walk probability of every path (the exact draw and the
random walks give the same law). Also: the default ``last_hop='walk'`` corpus is pinned.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest
from test_sampling import _sub_dataset, brute_user_paths, check_user_paths, rows, small_kg

import kgglm.paths.user_paths as user_paths
from kgglm.data.dataset import Interactions
from kgglm.data.graph import CollaborativeGraph
from kgglm.paths.sampling import sample_user_paths


def per_user(batch, n_users) -> np.ndarray:
    return np.bincount(batch.nodes[:, 0], minlength=n_users)


def available(graph, train, hops, collaborative) -> np.ndarray:
    return np.bincount([p[0] for p in brute_user_paths(graph, train, hops, collaborative)], minlength=graph.n_users)


def no_walks(monkeypatch, every_user: bool = True):
    """Make any random walk for fine-tuning paths an error (exact users must not walk);
    ``every_user``: lift the per-user look-up budget, so small caps are enumerated too."""
    def fail(*args, **kwargs):
        raise AssertionError("walked for a user that is enumerated exactly")

    monkeypatch.setattr(user_paths, "_user_walks", fail)
    if every_user:
        monkeypatch.setattr(user_paths, "_EXACT_LOOKUPS_PER_PATH", 10**9)


# ------------------------------------------------------------------------------------ path sets
@pytest.mark.parametrize("collaborative", [True, False])
@pytest.mark.parametrize("cap", [1, 4, 100_000])
def test_exact_paths_and_caps_equal_brute_force(toy_dataset, monkeypatch, collaborative, cap):
    """Every user gets exactly min(cap, number of paths) distinct valid paths, and with a large cap
    exactly the brute-force set; no walk is drawn (every toy user is cheap to enumerate)."""
    no_walks(monkeypatch)
    ds = toy_dataset
    g, train = ds.graph, ds.splits["train"]
    b = sample_user_paths(g, train, max_paths_per_user=cap, collaborative=collaborative, seed=5,
                          last_hop="direct")
    check_user_paths(g, train, b, 3, cap, (ds.splits["valid"], ds.splits["test"]))
    assert rows(b) <= brute_user_paths(g, train, 3, collaborative)
    assert np.array_equal(per_user(b, g.n_users), np.minimum(available(g, train, 3, collaborative), cap))
    if cap == 100_000:
        assert rows(b) == brute_user_paths(g, train, 3, collaborative)
    assert np.all(np.diff(b.nodes[:, 0]) >= 0), "grouped by user"


@pytest.mark.parametrize("collaborative", [True, False])
def test_exact_on_hand_made_graph_with_item_item_edges(monkeypatch, collaborative):
    no_walks(monkeypatch)
    g = small_kg()  # item-item edges, a leaf entity, an item without KG edge
    train = Interactions(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 2]))
    b = sample_user_paths(g, train, max_paths_per_user=1000, collaborative=collaborative, seed=2,
                          last_hop="direct")
    check_user_paths(g, train, b, 3, 1000)
    assert rows(b) == brute_user_paths(g, train, 3, collaborative)


def test_train_subset_of_graph_and_mixed_exact_and_walked_users(toy_dataset, monkeypatch):
    """Users above the exact budget are walked, the others enumerated; both respect the rules, the
    graph may hold more users' interactions than ``train``."""
    ds = toy_dataset
    g = ds.graph
    keep = ds.splits["train"].users % 2 == 0
    train = Interactions(ds.splits["train"].users[keep], ds.splits["train"].items[keep])
    exact = sample_user_paths(g, train, max_paths_per_user=5, seed=1, last_hop="direct")
    monkeypatch.setattr(user_paths, "_EXACT_LOOKUPS_PER_PATH", -1)  # nobody exact: all walked
    walked = sample_user_paths(g, train, max_paths_per_user=5, seed=1, last_hop="direct")
    for b in (exact, walked):
        check_user_paths(g, train, b, 3, 5, graph_train=ds.splits["train"])
        assert set(b.nodes[:, 0].tolist()) <= set(train.users.tolist())
    avail = available(g, train, 3, True)
    assert np.array_equal(per_user(exact, g.n_users), np.minimum(avail, 5))
    assert (per_user(walked, g.n_users) <= np.minimum(avail, 5)).all()


def test_hop5_direct_still_walks(toy_dataset):
    """Exact enumeration is for 3 hops; longer paths are walked (and still valid)."""
    ds = _sub_dataset(toy_dataset, n_users=9)
    train = ds.splits["train"]
    b = sample_user_paths(ds.graph, train, max_paths_per_user=50, hop_length=5, seed=0, last_hop="direct")
    check_user_paths(ds.graph, train, b, 5, 50)
    assert rows(b) <= brute_user_paths(ds.graph, train, 5, True)


# ------------------------------------------------------------------------------------ rare paths
def rare_path_graph(n_entities: int = 400) -> tuple[CollaborativeGraph, Interactions]:
    """User 0 has items I0 and I1. I0 links n entities, I1 only E0: the path U-I1-E0-I0 takes half
    the valid walks, U-I0-E0-I1 one in 2n. Walks found the common one, saw it repeat and stopped."""
    u, i = 1, 2
    heads = [0, 0] + [u + 0] * n_entities + [u + 1]
    rels = [0, 0] + [1] * n_entities + [1]
    tails = [u + 0, u + 1] + [u + i + k for k in range(n_entities)] + [u + i]
    g = CollaborativeGraph.from_edges(u, i, n_entities, 2, np.array(heads), np.array(rels), np.array(tails))
    return g, Interactions(np.array([0, 0]), np.array([0, 1]))


def test_rare_path_is_found_without_walking(monkeypatch):
    """The previous sampler saturated after the common path (round 0: ~434 walks, 1 in 800 rare),
    missing the rare one in most seeds; enumeration finds both and draws no walk (default budget)."""
    no_walks(monkeypatch, every_user=False)
    g, train = rare_path_graph()
    for seed in range(5):
        b = sample_user_paths(g, train, max_paths_per_user=250, seed=seed, last_hop="direct")
        assert rows(b) == brute_user_paths(g, train, 3, True) and len(b) == 2


# ------------------------------------------------------------------------------------ the law
def law_graph() -> tuple[CollaborativeGraph, Interactions]:
    """2 users, 4 items, 4 entities; user 0's 10 paths have unequal walk probabilities (hubs, a
    co-user, an entity-entity edge that completes nothing)."""
    u, i = 2, 4
    I = lambda k: u + k  # noqa: E731, E741
    E = lambda k: u + i + k  # noqa: E731
    train = Interactions(np.array([0, 0, 0, 1, 1, 1]), np.array([0, 1, 2, 0, 1, 3]))
    kg = [(I(0), 1, E(0)), (I(0), 1, E(1)), (I(0), 2, E(2)), (I(0), 2, E(3)), (I(1), 1, E(0)),
          (I(2), 1, E(1)), (I(2), 2, E(0)), (I(3), 1, E(3)), (E(0), 3, E(1))]
    heads = np.concatenate([train.users, [h for h, _, _ in kg]])
    rels = np.concatenate([np.zeros(6, np.int64), [r for _, r, _ in kg]])
    tails = np.concatenate([train.items + u, [t for _, _, t in kg]])
    return CollaborativeGraph.from_edges(u, i, 4, 4, heads, rels, tails), train


def direct_walk_law(graph, train, user: int, ui_share: float) -> dict[tuple, float]:
    """Probability of each path of ``user`` under the direct walk, by hand: uniform first item, the
    second hop's UI/KG choice (``ui_share``) with the step back to the user rejected, then a uniform
    last edge among those to another training item of the user; normalised over valid paths."""
    adj = [list(zip(*graph.neighbors(v))) for v in range(graph.n_nodes)]
    adj = [[(int(n), int(r)) for n, r in a] for a in adj]
    items = {int(i) + graph.n_users for uu, i in zip(train.users.tolist(), train.items.tolist()) if uu == user}
    law = {}
    for first in items:
        ui = [e for e in adj[first] if e[1] == 0]
        kg = [e for e in adj[first] if e[1] != 0]
        p = {e: (ui_share if kg else 1.0) / len(ui) for e in ui}
        p.update({e: (1 - ui_share if ui else 1.0) / len(kg) for e in kg})
        stay = 1 - sum(q for (n, _), q in p.items() if n == user)
        for (x, r1), q in p.items():
            if x == user:
                continue
            done = [(n, r2) for n, r2 in adj[x] if n in items and n not in (first, x)]
            for n, r2 in done:
                law[(user, first, x, n, 0, r1, r2)] = q / stay / len(done)
    total = sum(law.values())
    return {k: v / total for k, v in law.items()}


@pytest.mark.parametrize("exact", [True, False])
def test_first_path_follows_the_walk_law(monkeypatch, exact):
    """With cap 1 the one path of user 0 is distributed as the walk's first valid path: the exact
    draw (log(u)/p keys) and the random walks both match the hand-computed law."""
    g, train = law_graph()
    law = direct_walk_law(g, train, 0, 0.5)
    assert set(law) == {p for p in brute_user_paths(g, train, 3, True) if p[0] == 0}
    assert len(set(np.round(list(law.values()), 6))) >= 4, "unequal probabilities, or the test is weak"
    if exact:
        no_walks(monkeypatch)
    else:
        monkeypatch.setattr(user_paths, "_EXACT_LOOKUPS_PER_PATH", -1)
    n = 1500
    seen = Counter()
    for seed in range(n):
        b = sample_user_paths(g, train, max_paths_per_user=1, seed=seed, last_hop="direct")
        seen.update(p for p in rows(b) if p[0] == 0)
    assert sum(seen.values()) == n
    for path, p in law.items():
        assert abs(seen[path] / n - p) < 4.5 * np.sqrt(p * (1 - p) / n) + 1e-3, (path, seen[path] / n, p)


def test_exact_draw_is_reproducible_and_seed_dependent():
    g, train = law_graph()
    a = sample_user_paths(g, train, max_paths_per_user=3, seed=11, last_hop="direct")
    b = sample_user_paths(g, train, max_paths_per_user=3, seed=11, last_hop="direct")
    assert np.array_equal(a.nodes, b.nodes) and np.array_equal(a.relations, b.relations)
    others = [sample_user_paths(g, train, max_paths_per_user=3, seed=s, last_hop="direct") for s in range(5)]
    assert any(not np.array_equal(a.nodes, o.nodes) for o in others)


# ------------------------------------------------------------------------------------ default corpus pinned
def test_default_walk_corpus_unchanged_on_ml100k(shared_data):
    """``last_hop='walk'`` (the default, the paper's corpus) is not touched by the direct-mode
    changes: the ml-100k corpus of seed 2024, 50 paths per user, is pinned bit for bit."""
    from kgglm.data import load_dataset

    ds = load_dataset("ml-100k", data_path=shared_data)
    b = sample_user_paths(ds.graph, ds.splits["train"], max_paths_per_user=50, seed=2024)
    digest = hashlib.sha256(np.ascontiguousarray(b.nodes, dtype=np.int64).tobytes()
                            + np.ascontiguousarray(b.relations, dtype=np.int64).tobytes()).hexdigest()
    assert len(b) == 47150
    assert digest == "511ca745368bf10dc22a41463d13d7fe29d1721234924ea537ff095f6344190b"
