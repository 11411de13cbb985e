"""The in-memory dataset every stage works on: id maps, split interactions and the graph.

Users, items and entities are 0-based indices within their own kind; ``graph`` maps them to
node ids (see :mod:`kgglm.data.graph`). The graph's user-item edges come from ``splits['train']``
only, so nothing from validation or test can leak into paths or decoding constraints.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kgglm.data.graph import UI_RELATION, CollaborativeGraph

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Interactions:
    """One split's interactions as parallel arrays of 0-based user and item indices."""

    users: np.ndarray  # int64
    items: np.ndarray  # int64
    timestamps: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.users.shape[0])


@dataclass
class Dataset:
    """A loaded dataset: original tokens, readable names, split interactions, KG triples and graph."""

    name: str
    user_tokens: np.ndarray  # str, (n_users,)
    item_tokens: np.ndarray  # str, (n_items,)
    entity_tokens: np.ndarray  # str, (n_entities,) KG entities that are not items
    relation_tokens: np.ndarray  # str, (n_relations,); index 0 is the ui_relation name
    item_names: np.ndarray  # str, (n_items,) readable titles (item token when unknown)
    item_entity_tokens: np.ndarray  # str, (n_items,) linked KG entity token, '' when unlinked
    splits: dict[str, Interactions]
    kg_heads: np.ndarray  # int64 node ids, de-duplicated triples
    kg_relations: np.ndarray  # int64 relation ids (>= 1)
    kg_tails: np.ndarray  # int64 node ids
    graph: CollaborativeGraph
    stats: dict = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return int(len(self.user_tokens))

    @property
    def n_items(self) -> int:
        return int(len(self.item_tokens))

    @property
    def n_entities(self) -> int:
        return int(len(self.entity_tokens))

    @property
    def n_relations(self) -> int:
        return int(len(self.relation_tokens))

    # --------------------------------------------------------------------------- token maps
    def node_tokens(self) -> np.ndarray:
        """Original dataset token of every node id (users, then items, then entities)."""
        return np.concatenate([self.user_tokens, self.item_tokens, self.entity_tokens]).astype(object)

    def node_names(self) -> np.ndarray:
        """Readable name of every node id: user token, item title, entity token."""
        return np.concatenate([self.user_tokens, self.item_names, self.entity_tokens]).astype(object)

    def user_index(self, tokens) -> np.ndarray:
        """0-based user indices of original user tokens; KeyError naming the first unknown one."""
        return lookup_tokens(self.user_tokens, tokens, "user")

    def item_index(self, tokens) -> np.ndarray:
        return lookup_tokens(self.item_tokens, tokens, "item")


def build_graph(
    n_users: int,
    n_items: int,
    n_entities: int,
    n_relations: int,
    train: Interactions,
    kg_heads: np.ndarray,
    kg_relations: np.ndarray,
    kg_tails: np.ndarray,
) -> CollaborativeGraph:
    """The collaborative graph: KG triples plus user-item edges of the *training* split only."""
    ui_heads = train.users.astype(np.int64)
    ui_tails = train.items.astype(np.int64) + n_users
    return CollaborativeGraph.from_edges(
        n_users,
        n_items,
        n_entities,
        n_relations,
        np.concatenate([ui_heads, kg_heads]),
        np.concatenate([np.full(len(ui_heads), UI_RELATION, dtype=np.int64), kg_relations]),
        np.concatenate([ui_tails, kg_tails]),
    )


def lookup_tokens(table, tokens, kind: str) -> np.ndarray:
    """Index of each token in ``table`` (exact string match); KeyError naming the first unknown one."""
    table = np.asarray(table).astype(str)
    tokens = np.atleast_1d(np.asarray(tokens, dtype=object)).astype(str)
    order = np.argsort(table, kind="stable")
    pos = np.minimum(np.searchsorted(table[order], tokens), max(len(table) - 1, 0))
    bad = (table[order][pos] != tokens) if len(table) else np.ones(tokens.shape, bool)
    if bad.any():
        raise KeyError(f"unknown {kind} id {str(tokens[bad][0])!r}")
    return order[pos].astype(np.int64)
