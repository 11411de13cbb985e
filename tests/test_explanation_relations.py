"""benchmarks/explanation_relations.py: its detour counts against a walk over the graph's neighbour lists."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from kgglm.synthetic.small import make_knowledge_dataset

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "explanation_relations.py"


def _script():
    spec = importlib.util.spec_from_file_location("explanation_relations", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _alternative(data, user: int, item_node: int, avoided: int, keep: set[int] | None = None) -> bool:
    """Brute force: is there ``user -0-> l -r1-> e -r2-> item`` with e an entity, r1, r2 KG relations
    other than ``avoided`` (and in ``keep``, if given), ``l`` a training item of the user?"""
    nbr, rel = data.graph.neighbors(user)
    return any(_same_link(data, int(l_node), item_node, avoided, keep) for l_node in nbr[rel == 0])


def test_detours_match_a_walk_over_the_graph():
    data = make_knowledge_dataset(
        n_users=60, n_items=80, n_genres=6, n_actors=40, n_directors=15, interactions_per_user=8
    )
    g = data.graph
    rng = np.random.default_rng(0)
    n = 300
    users = rng.integers(0, g.n_users, n)
    links = g.item_offset + rng.integers(0, g.n_items, n)
    items = g.item_offset + rng.integers(0, g.n_items, n)
    mids = np.where(rng.random(n) < 0.8, g.entity_offset + rng.integers(0, g.n_entities, n), users)
    rels = np.stack([np.zeros(n, int), rng.integers(0, g.n_relations, n), rng.integers(0, g.n_relations, n)], 1)
    paths = {"nodes": np.stack([users, links, mids, items], 1), "rels": rels}
    out = _script().detours(data, paths, "has_genre")
    avoided = 2
    through = (rels[:, 1:] == avoided).any(1)
    found = [_alternative(data, int(u), int(i), avoided) for u, i in zip(users, items)]
    assert out["through_relation"] == int(through.sum()) > 0
    assert out["kg_paths"] == int((mids >= g.entity_offset).sum())
    assert out["with_other_kg_path"] == sum(f for f, t in zip(found, through) if t) > 0
    same = sum(_same_link(data, int(lk), int(i), avoided) for lk, i, t in zip(links, items, through) if t)
    assert out["with_other_kg_path_same_link"] == same
    alone = {
        name: sum(_alternative(data, int(u), int(i), avoided, keep={r}) for u, i, t in zip(users, items, through) if t)
        for r, name in ((1, "directed_by"), (3, "starring"))
    }
    assert out["with_other_kg_path_by_relation"] == alone
    assert 0 < alone["directed_by"] < out["with_other_kg_path"] < out["through_relation"]


def _same_link(data, link: int, item_node: int, avoided: int, keep: set[int] | None = None) -> bool:
    """``link -r1-> e -r2-> item`` through an entity, both relations KG, not ``avoided``, in ``keep``."""
    g = data.graph

    def ok(r: int) -> bool:
        return r not in (0, avoided) and (keep is None or r in keep)

    n1, r1 = g.neighbors(link)
    ents = {e for e, r in zip(n1.tolist(), r1.tolist()) if e >= g.entity_offset and ok(r)}
    n2, r2 = g.neighbors(item_node)
    return any(e in ents and ok(r) for e, r in zip(n2.tolist(), r2.tolist()))
