"""Small synthetic datasets with a planted pattern, for tests, examples and benchmarks of logic.

Items fall into ``n_clusters`` clusters; each cluster has its own KG entities (think "genre" and
"director") linked to all its items, and each user interacts only with items of one cluster. A
model that learns the graph should recommend the user's cluster first.
"""

from __future__ import annotations

import numpy as np

from kgglm.data.dataset import Dataset, Interactions, build_graph


def make_synthetic_dataset(
    n_users: int = 40,
    n_items: int = 30,
    n_clusters: int = 3,
    entities_per_cluster: int = 2,
    items_per_user: int = 8,
    split: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    name: str = "synthetic",
) -> Dataset:
    """A dataset whose users each like items of a single cluster (see module docstring)."""
    rng = np.random.default_rng(seed)
    item_cluster = np.arange(n_items) % n_clusters
    user_cluster = np.arange(n_users) % n_clusters
    n_entities = n_clusters * entities_per_cluster
    rel_names = ["[UI-Relation]"] + [f"rel_{k}" for k in range(entities_per_cluster)]

    heads, rels, tails = [], [], []
    for item in range(n_items):
        for k in range(entities_per_cluster):
            heads.append(n_users + item)
            rels.append(1 + k)
            tails.append(n_users + n_items + item_cluster[item] * entities_per_cluster + k)
    kg_heads, kg_rels, kg_tails = (np.array(a, dtype=np.int64) for a in (heads, rels, tails))

    parts = {s: ([], []) for s in ("train", "valid", "test")}
    for u in range(n_users):
        pool = np.flatnonzero(item_cluster == user_cluster[u])
        chosen = rng.choice(pool, size=min(items_per_user, len(pool)), replace=False)
        n_tr = max(2, int(round(split[0] * len(chosen))))
        n_va = max(1, int(round(split[1] * len(chosen)))) if len(chosen) > n_tr + 1 else 0
        for name_, sl in (("train", chosen[:n_tr]), ("valid", chosen[n_tr:n_tr + n_va]),
                          ("test", chosen[n_tr + n_va:])):
            parts[name_][0].extend([u] * len(sl))
            parts[name_][1].extend(sl.tolist())
    splits = {s: Interactions(np.array(us, dtype=np.int64), np.array(it, dtype=np.int64))
              for s, (us, it) in parts.items()}
    graph = build_graph(n_users, n_items, n_entities, len(rel_names), splits["train"],
                        kg_heads, kg_rels, kg_tails)
    item_tokens = np.array([str(100 + i) for i in range(n_items)], dtype=object)
    return Dataset(
        name=name,
        user_tokens=np.array([str(1 + u) for u in range(n_users)], dtype=object),
        item_tokens=item_tokens,
        entity_tokens=np.array([f"ent_c{e // entities_per_cluster}_{e % entities_per_cluster}"
                                for e in range(n_entities)], dtype=object),
        relation_tokens=np.array(rel_names, dtype=object),
        item_names=np.array([f"Movie {i} (cluster {item_cluster[i]})" for i in range(n_items)], dtype=object),
        item_entity_tokens=np.array([f"m.item{i}" for i in range(n_items)], dtype=object),
        splits=splits,
        kg_heads=kg_heads,
        kg_relations=kg_rels,
        kg_tails=kg_tails,
        graph=graph,
    )
