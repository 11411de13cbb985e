"""Token vocabulary: a fixed arithmetic layout over the graph's node and relation ids.

    0..4                         special tokens [PAD] [BOS] [EOS] [UNK] [MASK]
    5 .. 5+R-1                   relations R0..R{R-1}        (R0 is the user-item relation)
    5+R .. 5+R+N-1               nodes, in graph node order: U0.., I0.., E0..

So ``token = RELATION_OFFSET + rel`` and ``token = node_offset + node`` with no lookup table;
encoding and decoding are array arithmetic. ``token_types`` gives each token its type
(0 special, 1 entity/node, 2 relation) for the model's token-type embedding.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kgglm import durable
from kgglm.data.dataset import lookup_tokens

SPECIAL_TOKENS = ("[PAD]", "[BOS]", "[EOS]", "[UNK]", "[MASK]")
PAD, BOS, EOS, UNK, MASK = range(len(SPECIAL_TOKENS))
RELATION_OFFSET = len(SPECIAL_TOKENS)
TYPE_SPECIAL, TYPE_ENTITY, TYPE_RELATION = 0, 1, 2
VOCAB_FILE = "vocab.json"


@dataclass(frozen=True)
class Vocabulary:
    """Token layout for a graph with these sizes (see module docstring)."""

    n_users: int
    n_items: int
    n_entities: int
    n_relations: int
    dataset: str = ""

    @classmethod
    def from_graph(cls, graph, dataset: str = "") -> "Vocabulary":
        return cls(graph.n_users, graph.n_items, graph.n_entities, graph.n_relations, dataset)

    # ------------------------------------------------------------------------------ layout
    @property
    def n_nodes(self) -> int:
        return self.n_users + self.n_items + self.n_entities

    @property
    def node_offset(self) -> int:
        return RELATION_OFFSET + self.n_relations

    @property
    def size(self) -> int:
        return self.node_offset + self.n_nodes

    def __len__(self) -> int:
        return self.size

    def token_types(self) -> np.ndarray:
        types = np.full(self.size, TYPE_ENTITY, dtype=np.int64)
        types[:RELATION_OFFSET] = TYPE_SPECIAL
        types[RELATION_OFFSET : self.node_offset] = TYPE_RELATION
        return types

    def output_slices(self, length: int, stage: str) -> np.ndarray:
        """Token range ``[lo, hi)`` each position of a ``length``-token row may predict, ``[length-1, 2]``.

        The path grammar fixes the kind of every next token: after ``[BOS]`` or a relation comes a
        node; after a node comes a relation or ``[EOS]`` (specials and relations are one range).
        User paths (``stage='finetune'``, ``[BOS] U R I ... R I [EOS]``) also fix the first node to
        a user and the first and last items to items. Training normalises each softmax over its
        range (see ``KGGLM.loss``); padding positions are ignored by the loss whatever their range.
        """
        if stage not in ("pretrain", "finetune"):
            raise ValueError(f"stage must be 'pretrain' or 'finetune', got {stage!r}")
        slices = np.empty((length - 1, 2), dtype=np.int64)
        body = np.arange(length - 1)  # body index of the predicted token (the first node is 0)
        node = body % 2 == 0
        slices[node] = (self.node_offset, self.size)
        slices[~node] = (0, self.node_offset)
        if stage == "finetune":
            items = (self.node_offset + self.n_users, self.node_offset + self.n_users + self.n_items)
            slices[0] = (self.node_offset, self.node_offset + self.n_users)
            last_node = length - 3  # [BOS] + body of length-2 tokens + [EOS]
            for b in (2, last_node):
                if 0 < b < length - 1:
                    slices[b] = items
        return slices

    @property
    def user_token_range(self) -> tuple[int, int]:
        """Token ids ``[lo, hi)`` of the users."""
        return self.node_offset, self.node_offset + self.n_users

    @property
    def item_token_range(self) -> tuple[int, int]:
        """Token ids ``[lo, hi)`` of the items (``lo`` is item 0's token)."""
        lo = self.node_offset + self.n_users
        return lo, lo + self.n_items

    # ------------------------------------------------------------------------------ encode/decode
    # Id <-> token conversions take NumPy arrays (or anything array-like) and torch tensors alike: a
    # tensor stays a tensor on its device (the decoder's hot paths), everything else becomes int64.
    def node_token(self, nodes):
        """Token of node ids."""
        return _ids(nodes) + self.node_offset

    def user_token(self, users):
        """Token of user indices (users are nodes 0..n_users-1)."""
        return _ids(users) + self.node_offset

    def item_token(self, items):
        """Token of item indices."""
        return _ids(items) + self.item_token_range[0]

    def relation_token(self, relations):
        """Token of relation ids."""
        return _ids(relations) + RELATION_OFFSET

    def token_node(self, tokens):
        """Node id of node tokens (-1 for tokens that are not nodes)."""
        return _offset_or_missing(_ids(tokens), self.node_offset, self.size)

    def token_item(self, tokens):
        """Item index of item tokens (-1 for tokens that are not items)."""
        return _offset_or_missing(_ids(tokens), *self.item_token_range)

    def token_relation(self, tokens):
        """Relation id of relation tokens (-1 for tokens that are not relations)."""
        return _offset_or_missing(_ids(tokens), RELATION_OFFSET, self.node_offset)

    def encode_paths(self, nodes: np.ndarray, relations: np.ndarray, add_special: bool = True) -> np.ndarray:
        """Interleave node ids (P, H+1) and relation ids (P, H) into tokens (P, 2H+1[+2]).

        Negative entries are padding (shorter walks) and become ``[PAD]``; with ``add_special``
        each row gets ``[BOS]`` in front and ``[EOS]`` right after its last real token.
        """
        nodes = np.asarray(nodes, dtype=np.int64)
        relations = np.asarray(relations, dtype=np.int64)
        p, h1 = nodes.shape
        body = np.full((p, 2 * h1 - 1), PAD, dtype=np.int64)
        body[:, 0::2] = np.where(nodes >= 0, nodes + self.node_offset, PAD)
        body[:, 1::2] = np.where(relations >= 0, relations + RELATION_OFFSET, PAD)
        if not add_special:
            return body
        out = np.full((p, body.shape[1] + 2), PAD, dtype=np.int64)
        out[:, 0] = BOS
        out[:, 1:-1] = body
        length = (body != PAD).sum(axis=1)  # real tokens per row (padding is only at the end)
        out[np.arange(p), length + 1] = EOS
        return out

    def decode_paths(self, tokens: np.ndarray, strict: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Inverse of :meth:`encode_paths`: token rows -> (nodes [P, H+1], relations [P, H]), -1 padded.

        A leading ``[BOS]`` column is dropped; decoding of a row stops at its first special token.
        With ``strict``, a relation token where a node belongs (or the reverse) raises ValueError.
        """
        t = np.atleast_2d(np.asarray(tokens, dtype=np.int64))
        if t.shape[1] and (t[:, 0] == BOS).all():
            t = t[:, 1:]
        special = t < RELATION_OFFSET
        after_end = np.cumsum(special, axis=1) > 0  # everything from the first special token on
        body = np.where(after_end, PAD, t)
        if body.shape[1] % 2 == 0:  # make the width odd: node, (relation, node)*
            body = np.concatenate([body, np.full((body.shape[0], 1), PAD, np.int64)], axis=1)
        node_tok, rel_tok = body[:, 0::2], body[:, 1::2]
        nodes, rels = self.token_node(node_tok), self.token_relation(rel_tok)
        if strict:
            bad_node = (node_tok != PAD) & (nodes < 0) | (nodes >= self.n_nodes)
            bad_rel = (rel_tok != PAD) & (rels < 0)
            if bad_node.any() or bad_rel.any():
                row = int(np.flatnonzero(bad_node.any(axis=1) | bad_rel.any(axis=1))[0])
                raise ValueError(f"row {row} is not node, relation, node, ...: {t[row].tolist()}")
        nodes = np.where(nodes < self.n_nodes, nodes, -1)
        # a path has one relation fewer than nodes; drop a trailing all-padding relation column
        h = max(int((nodes >= 0).sum(axis=1).max(initial=1)) - 1, 0)
        return nodes[:, : h + 1], rels[:, :h]

    # ------------------------------------------------------------------------------ dataset tokens
    def check_dataset(self, dataset) -> None:
        """Raise ValueError unless ``dataset`` has exactly this vocabulary's sizes."""
        got = (dataset.n_users, dataset.n_items, dataset.n_entities, dataset.n_relations)
        want = (self.n_users, self.n_items, self.n_entities, self.n_relations)
        if got != want:
            raise ValueError(f"dataset {dataset.name!r} has (users, items, entities, relations) = {got}, "
                             f"vocabulary {self.dataset!r} expects {want}")

    def dataset_token_table(self, dataset, names: bool = False) -> np.ndarray:
        """Original dataset token (or readable name) of every token id, as an object array.

        Specials keep their ``[PAD]``-style strings, relations use ``dataset.relation_tokens``
        (index 0 is the ui_relation name), nodes ``dataset.node_tokens()`` / ``node_names()``.
        """
        self.check_dataset(dataset)
        node_part = dataset.node_names() if names else dataset.node_tokens()
        return np.concatenate([np.array(SPECIAL_TOKENS, dtype=object),
                               np.asarray(dataset.relation_tokens, dtype=object),
                               np.asarray(node_part, dtype=object)])

    def to_dataset_tokens(self, tokens, dataset, names: bool = False) -> list[list[str]]:
        """Token rows -> lists of original dataset tokens (or names), specials/padding left out."""
        t = np.atleast_2d(np.asarray(tokens, dtype=np.int64))
        table = self.dataset_token_table(dataset, names)
        if t.size and (t.min() < 0 or t.max() >= self.size):
            raise ValueError(f"token id out of range [0, {self.size})")
        strings = table[t]
        keep = t >= RELATION_OFFSET
        return [row[k].tolist() for row, k in zip(strings, keep)]  # inspection/output, not training

    def nodes_from_dataset_tokens(self, dataset, tokens, kind: str) -> np.ndarray:
        """Node ids of original dataset tokens of one kind ('user', 'item' or 'entity').

        The kind is needed because datasets reuse strings across kinds (user "196", item "196").
        """
        self.check_dataset(dataset)
        tables = {"user": (dataset.user_tokens, 0),
                  "item": (dataset.item_tokens, self.n_users),
                  "entity": (dataset.entity_tokens, self.n_users + self.n_items)}
        if kind not in tables:
            raise ValueError(f"kind must be one of {sorted(tables)}, got {kind!r}")
        table, offset = tables[kind]
        return lookup_tokens(table, tokens, kind) + offset

    def relations_from_dataset_tokens(self, dataset, names) -> np.ndarray:
        """Relation ids of relation names (the ui_relation name is relation 0)."""
        self.check_dataset(dataset)
        return lookup_tokens(dataset.relation_tokens, names, "relation")

    def token_strings(self, tokens) -> np.ndarray:
        """Readable token strings: [BOS], R3, U12, I55, E901."""
        t = np.asarray(tokens, dtype=np.int64)
        out = np.empty(t.shape, dtype=object)
        flat, res = t.ravel(), out.ravel()
        for i, tok in enumerate(flat.tolist()):  # inspection only, never a hot path
            res[i] = self.token_string(tok)
        return out

    def token_string(self, token: int) -> str:
        if 0 <= token < RELATION_OFFSET:
            return SPECIAL_TOKENS[token]
        if token < self.node_offset:
            return f"R{token - RELATION_OFFSET}"
        node = token - self.node_offset
        if node < self.n_users:
            return f"U{node}"
        if node < self.n_users + self.n_items:
            return f"I{node - self.n_users}"
        if node < self.n_nodes:
            return f"E{node - self.n_users - self.n_items}"
        return SPECIAL_TOKENS[UNK]

    def parse_token(self, s: str) -> int:
        """Inverse of :meth:`token_string`."""
        if s in SPECIAL_TOKENS:
            return SPECIAL_TOKENS.index(s)
        kind, num = s[0], int(s[1:])
        base = {"R": RELATION_OFFSET, "U": self.node_offset, "I": self.node_offset + self.n_users,
                "E": self.node_offset + self.n_users + self.n_items}
        limit = {"R": self.n_relations, "U": self.n_users, "I": self.n_items, "E": self.n_entities}
        if kind not in base or not 0 <= num < limit[kind]:
            raise KeyError(f"unknown token {s!r}")
        return base[kind] + num

    # ------------------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / VOCAB_FILE
        return durable.write_json(path, asdict(self), indent=2)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Vocabulary":
        """Read ``vocab.json``; a ValueError names the file and the field when it is not a vocabulary
        (sizes non-negative integers, ``dataset`` a string, no other field)."""
        file = Path(directory) / VOCAB_FILE
        data = json.loads(file.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{file}: expected a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - {"n_users", "n_items", "n_entities", "n_relations", "dataset"})
        if unknown:
            raise ValueError(f"{file}: unknown field(s) {unknown}")
        for key in ("n_users", "n_items", "n_entities", "n_relations"):
            value = data.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                got = "missing" if key not in data else f"{value!r}"[:100]
                raise ValueError(f"{file}: field {key!r} is {got}, expected a non-negative integer")
        if not isinstance(data.get("dataset", ""), str):
            raise ValueError(f"{file}: field 'dataset' is {data['dataset']!r}"[:200] + ", expected a string")
        return cls(**data)


def _ids(x):
    """``x`` itself when it is a torch tensor (kept on its device), else an int64 NumPy array."""
    return x if type(x).__module__.startswith("torch") else np.asarray(x, dtype=np.int64)


def _offset_or_missing(tokens, lo: int, hi: int):
    """``tokens - lo`` where ``lo <= tokens < hi``, ``-1`` elsewhere (NumPy array or tensor)."""
    inside = (tokens >= lo) & (tokens < hi)
    if isinstance(tokens, np.ndarray):
        return np.where(inside, tokens - lo, -1)
    return (tokens - lo).masked_fill(~inside, -1)
