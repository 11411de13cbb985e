"""The collaborative knowledge graph as CSR arrays.

Node id layout (one id space, fixed arithmetic so nothing needs a lookup table):

    users     [0, n_users)
    items     [n_users, n_users + n_items)
    entities  [n_users + n_items, n_nodes)      (KG entities that are not items)

Relation id layout: ``0`` is the user-item relation (``ui_relation``), ``1..n_relations-1`` are
the KG relations. Every edge is stored in both directions with the same relation id, so a path
``U -r-> I`` can be walked back ``I -r-> U``. Rows are sorted by ``(relation, neighbor)``, which
keeps each ``(node, relation)`` group contiguous and makes membership tests a binary search.

Memory is O(edges): ``indptr`` (n_nodes + 1), ``neighbor`` and ``relation`` (2 * n_edges each).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

UI_RELATION = 0


@dataclass(frozen=True)
class CollaborativeGraph:
    """Users, items and entities in one graph, stored as CSR arrays (both directions of each edge)."""

    n_users: int
    n_items: int
    n_entities: int
    n_relations: int  # including the user-item relation (id 0)
    indptr: np.ndarray  # int64, shape (n_nodes + 1,)
    neighbor: np.ndarray  # int64, shape (n_directed_edges,)
    relation: np.ndarray  # int64, shape (n_directed_edges,)
    _edge_keys: np.ndarray = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def from_edges(
        cls,
        n_users: int,
        n_items: int,
        n_entities: int,
        n_relations: int,
        heads: np.ndarray,
        relations: np.ndarray,
        tails: np.ndarray,
    ) -> "CollaborativeGraph":
        """Build the graph from undirected edges given as node ids (each edge is added both ways).

        Duplicate edges (also the reverse of an edge already given) are stored once.
        """
        n_nodes = n_users + n_items + n_entities
        heads = np.asarray(heads, dtype=np.int64)
        tails = np.asarray(tails, dtype=np.int64)
        relations = np.asarray(relations, dtype=np.int64)
        if not (heads.shape == tails.shape == relations.shape):
            raise ValueError("heads, relations and tails must have the same shape")
        if heads.size:
            if heads.min() < 0 or tails.min() < 0 or max(heads.max(), tails.max()) >= n_nodes:
                raise ValueError(f"node id out of range [0, {n_nodes})")
            if relations.min() < 0 or relations.max() >= n_relations:
                raise ValueError(f"relation id out of range [0, {n_relations})")
        src = np.concatenate([heads, tails])
        dst = np.concatenate([tails, heads])
        rel = np.concatenate([relations, relations])
        keys = _edge_key(src, rel, dst, n_nodes, n_relations)
        keys = _sorted_unique(keys)  # sorts by (src, rel, dst) and drops duplicates
        src, rel, dst = _split_key(keys, n_nodes, n_relations)
        indptr = np.zeros(n_nodes + 1, dtype=np.int64)
        np.cumsum(np.bincount(src, minlength=n_nodes), out=indptr[1:])
        graph = cls(n_users, n_items, n_entities, n_relations, indptr, dst, rel, keys)
        return graph

    # ----------------------------------------------------------------------------- layout
    @property
    def n_nodes(self) -> int:
        return self.n_users + self.n_items + self.n_entities

    @property
    def n_edges(self) -> int:
        """Number of stored directed edges (twice the number of distinct undirected edges)."""
        return int(self.neighbor.shape[0])

    @property
    def item_offset(self) -> int:
        return self.n_users

    @property
    def entity_offset(self) -> int:
        return self.n_users + self.n_items

    def item_node(self, item):
        """Node id of item index ``item`` (int or array)."""
        return item + self.n_users

    def node_kind(self, nodes: np.ndarray) -> np.ndarray:
        """0 for users, 1 for items, 2 for entities."""
        nodes = np.asarray(nodes)
        return (nodes >= self.n_users).astype(np.int8) + (nodes >= self.entity_offset).astype(np.int8)

    # ----------------------------------------------------------------------------- queries
    def degree(self, nodes: np.ndarray | None = None) -> np.ndarray:
        deg = np.diff(self.indptr)
        return deg if nodes is None else deg[np.asarray(nodes)]

    def neighbors(self, node: int) -> tuple[np.ndarray, np.ndarray]:
        """(neighbor ids, relation ids) of one node; for inspection and tests, not hot paths."""
        lo, hi = self.indptr[node], self.indptr[node + 1]
        return self.neighbor[lo:hi], self.relation[lo:hi]

    @property
    def edge_keys(self) -> np.ndarray:
        """Sorted int64 keys ``(src * n_relations + rel) * n_nodes + dst`` of every directed edge."""
        return self._edge_keys

    def has_edge(self, src: np.ndarray, rel: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Vectorised membership test: is ``src -rel-> dst`` an edge of the graph?"""
        src, rel, dst = (np.asarray(a, dtype=np.int64) for a in (src, rel, dst))
        ok = (src >= 0) & (src < self.n_nodes) & (dst >= 0) & (dst < self.n_nodes)
        ok &= (rel >= 0) & (rel < self.n_relations)
        keys = _edge_key(np.where(ok, src, 0), np.where(ok, rel, 0), np.where(ok, dst, 0),
                         self.n_nodes, self.n_relations)
        pos = np.searchsorted(self.edge_keys, keys)
        pos = np.minimum(pos, max(len(self.edge_keys) - 1, 0))
        found = self.edge_keys[pos] == keys if len(self.edge_keys) else np.zeros_like(ok)
        return ok & found


def _sorted_unique(keys: np.ndarray) -> np.ndarray:
    """Sorted distinct values; sort + adjacent compare, which is far faster than ``np.unique`` on
    NumPy >= 2.3 (its hash-based path took ~8 s for ml1m's 3.7 M keys against ~0.1 s here)."""
    keys = np.sort(keys)
    if len(keys) > 1:
        keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
    return keys


def _edge_key(src: np.ndarray, rel: np.ndarray, dst: np.ndarray, n_nodes: int, n_rel: int) -> np.ndarray:
    return (src.astype(np.int64) * n_rel + rel.astype(np.int64)) * n_nodes + dst.astype(np.int64)


def _split_key(keys: np.ndarray, n_nodes: int, n_rel: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dst = keys % n_nodes
    sr = keys // n_nodes
    return sr // n_rel, sr % n_rel, dst
