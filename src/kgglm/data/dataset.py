"""The in-memory dataset every stage works on: id maps, split interactions and the graph.

Users, items and entities are 0-based indices within their own kind; ``graph`` maps them to
node ids (see :mod:`kgglm.data.graph`). The graph's user-item edges come from ``splits['train']``
only, so nothing from validation or test can leak into paths or decoding constraints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from kgglm.data.explanation_tables import ExplanationTables
from kgglm.data.graph import UI_RELATION, CollaborativeGraph

SPLITS = ("train", "valid", "test")
EVAL_SPLITS = ("valid", "test")


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
    # the dataset's own memo of the derived artefacts below (private: other layers call the accessors);
    # not an __init__ argument, so a copy made with dataclasses.replace starts with an empty one
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

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
        """Original dataset token of every node id (users, then items, then entities); read-only, built
        once (explanations look nodes up for every recommended item)."""
        return self._node_table("node_tokens", self.item_tokens)

    def node_names(self) -> np.ndarray:
        """Readable name of every node id: user token, item title, entity token (read-only, built once)."""
        return self._node_table("node_names", self.item_names)

    def _node_table(self, key: str, items: np.ndarray) -> np.ndarray:
        if key not in self._cache:
            table = np.concatenate([self.user_tokens, items, self.entity_tokens]).astype(object)
            table.flags.writeable = False
            self._cache[key] = table
        return self._cache[key]

    def user_index(self, tokens) -> np.ndarray:
        """0-based user indices of original user tokens; KeyError naming the first unknown one."""
        return lookup_tokens(self.user_tokens, tokens, "user")

    def item_index(self, tokens) -> np.ndarray:
        return lookup_tokens(self.item_tokens, tokens, "item")

    # --------------------------------------------------------------------------- evaluation views
    def eval_users(self, split: str) -> np.ndarray:
        """Sorted users with at least one interaction in ``split`` (the users evaluated on it)."""
        return np.unique(np.asarray(self.splits[split].users, dtype=np.int64))

    def seen_splits(self, split: str) -> list[str]:
        """Splits whose items a user must not be recommended when evaluating ``split``: train, and
        valid too when testing (RecBole's full-ranking protocol)."""
        if split not in EVAL_SPLITS:
            raise ValueError(f"split must be one of {EVAL_SPLITS}, got {split!r}")
        return ["train", "valid"] if split == "test" else ["train"]

    def seen_items(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """CSR ``(indptr [n_users + 1], items)`` of the items each user has seen before ``split``
        (sorted, de-duplicated); cached, it is asked for at every evaluation."""
        return self._csr(tuple(self.seen_splits(split)))

    def split_items(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """CSR ``(indptr [n_users + 1], items)`` of each user's items in ``split`` (the relevant ones)."""
        return self._csr((split,))

    # --------------------------------------------------------------------------- derived artefacts
    def train_item_counts(self) -> np.ndarray:
        """Training interactions per item as float64 ``[n_items]`` (Pop's scores, novelty); read-only,
        built once."""
        if "train_item_counts" not in self._cache:
            counts = np.bincount(self.splits["train"].items, minlength=self.n_items).astype(np.float64)
            counts.flags.writeable = False
            self._cache["train_item_counts"] = counts
        return self._cache["train_item_counts"]

    def item_features(self) -> tuple[np.ndarray, np.ndarray]:
        """Distinct ``(item index, feature node id)`` pairs, sorted: each item's KG neighbours over any
        relation, both directions (entities or other items, never itself). Read-only, built once:
        KGItemKNN's features and the history expert's KG inputs."""
        if "item_features" not in self._cache:
            lo, hi = self.n_users, self.n_users + self.n_items
            heads, tails = np.asarray(self.kg_heads, np.int64), np.asarray(self.kg_tails, np.int64)
            src, dst = np.concatenate([heads, tails]), np.concatenate([tails, heads])
            keep = (src >= lo) & (src < hi) & (src != dst)
            n_nodes = self.graph.n_nodes
            keys = np.unique((src[keep] - lo) * n_nodes + dst[keep])
            pairs = (keys // n_nodes, keys % n_nodes)
            for a in pairs:
                a.flags.writeable = False
            self._cache["item_features"] = pairs
        return self._cache["item_features"]

    def explanation_tables(self) -> ExplanationTables:
        """The LIR/SEP lookups of the explanation metrics and of their post-processing (frozen, built
        once: both the evaluator and the decoder read them)."""
        if "explanation_tables" not in self._cache:
            self._cache["explanation_tables"] = ExplanationTables.from_dataset(self)
        return self._cache["explanation_tables"]

    def _csr(self, splits: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        if splits not in self._cache:
            self._cache[splits] = items_csr(self.n_users, self.n_items, [self.splits[s] for s in splits])
        return self._cache[splits]


def items_csr(n_users: int, n_items: int, interactions: Sequence[Interactions]) -> tuple[np.ndarray, np.ndarray]:
    """Per-user sorted, de-duplicated item indices of several ``Interactions``, as CSR arrays."""
    users = np.concatenate([np.asarray(x.users, dtype=np.int64) for x in interactions] or [np.zeros(0, np.int64)])
    items = np.concatenate([np.asarray(x.items, dtype=np.int64) for x in interactions] or [np.zeros(0, np.int64)])
    if users.size and (users.min() < 0 or users.max() >= n_users):
        raise ValueError(f"interactions: user index out of range [0, {n_users})")
    if items.size and (items.min() < 0 or items.max() >= n_items):
        raise ValueError(f"interactions: item index out of range [0, {n_items})")
    keys = np.unique(users * n_items + items)
    users, items = keys // n_items, keys % n_items
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=n_users), out=indptr[1:])
    return indptr, items


def segments(lo: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten segments ``[lo, lo + count)``: the segment index and the position of every element."""
    seg = np.repeat(np.arange(lo.shape[0]), counts)
    pos = np.arange(seg.shape[0]) - np.repeat(np.cumsum(counts) - counts, counts) + lo[seg]
    return seg, pos


def csr_rows(csr: tuple[np.ndarray, np.ndarray], rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The CSR segments of ``rows`` (in that order) as a new CSR ``(indptr [len(rows) + 1], items)``."""
    all_indptr, all_items = csr
    rows = np.asarray(rows, dtype=np.int64)
    lo = all_indptr[rows]
    counts = all_indptr[rows + 1] - lo
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return indptr, all_items[segments(lo, counts)[1]]


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
