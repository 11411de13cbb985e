"""Explained recommendations: one record shape for the export, ``kgglm recommend`` and the server.

:func:`explained_records` turns :class:`~kgglm.evaluate.ranked.Recommendations` into
:class:`ExplainedList` records (one per user) of :class:`ExplainedRecommendation` (one per item);
``to_dict()`` gives the JSON object every output writes:

========================  =====================================================================
``user``, ``user_index``  the user's dataset token and 0-based index
``rank``                  1-based
``item``, ``item_index``  the item's dataset token and 0-based index
``score``                 the ranking score; ``path_score``: the shown path's own score (or null)
``path_token_ids``        the path's token ids (``U r I ... r I'``, :mod:`kgglm.paths.vocab`)
``path``                  the same path in dataset tokens (relations by name, ``[PAD]`` as is)
``explanation``           readable text, ``user 42 watched Toy_Story -> starring Tom_Hanks -> ...``
``title``                 the item's readable name (``Dataset.item_names``)
``nodes``                 ``[{"id", "name", "kind"}]`` of the path's nodes (kind user/item/entity)
``relations``             the path's relation names, the user-item relation read as ``watched``
``explanation_source``    ``knowledge`` when a KG entity lies inside the path, else ``collaborative``
========================  =====================================================================

The export (:func:`kgglm.decode.recommend.write_recommendations`) writes one such object per
line, plus ``split`` and ``topk``; the server answers ``{"user", "explanation", "recommendations"}``;
``kgglm recommend --format json`` prints ``ExplainedList.to_dict()`` (``{"user", "recommendations"}``).
Everything is computed for a block of lists at once (array lookups per token column), the
explanation text included, so the export of a whole test split is not a loop per token.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from kgglm.paths.vocab import PAD, Vocabulary

UI_LABEL = "watched"  # how the user-item relation reads (``relation_phrases`` may rename it in explanations)
NODE_KINDS = ("user", "item", "entity")


@dataclass(frozen=True)
class PathNode:
    """One node of an explanation path: dataset token, readable name, kind (user, item, entity)."""

    id: str
    name: str
    kind: str

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "kind": self.kind}


@dataclass(frozen=True)
class ExplainedRecommendation:
    """One recommended item of one user with its explanation path (fields: module docstring)."""

    user: str
    user_index: int
    rank: int
    item: str
    item_index: int
    score: float
    path_score: float | None
    path_token_ids: tuple[int, ...]
    path: tuple[str, ...]
    explanation: str
    title: str
    nodes: tuple[PathNode, ...]
    relations: tuple[str, ...]
    explanation_source: str

    def to_dict(self) -> dict:
        """The record as a JSON-ready dict (keys in the field order above)."""
        return {"user": self.user, "user_index": self.user_index, "rank": self.rank, "item": self.item,
                "item_index": self.item_index, "score": self.score, "path_score": self.path_score,
                "path_token_ids": list(self.path_token_ids), "path": list(self.path),
                "explanation": self.explanation, "title": self.title,
                "nodes": [n.to_dict() for n in self.nodes], "relations": list(self.relations),
                "explanation_source": self.explanation_source}


@dataclass(frozen=True)
class ExplainedList:
    """One user's explained top-k list (ranks in order; fewer than k when fewer items were reachable)."""

    user: str
    user_index: int
    recommendations: tuple[ExplainedRecommendation, ...]

    def to_dict(self) -> dict:
        return {"user": self.user, "recommendations": [r.to_dict() for r in self.recommendations]}


def explained_records(recs, data, vocab: Vocabulary, *, rows=None, k: int | None = None,
                      phrases: Mapping[str, str] | None = None) -> list[ExplainedList]:
    """The explained lists of ``recs`` (rows ``rows``, default all; the first ``k`` ranks, default all).

    A list stops at its first missing entry (item ``-1``). ``phrases``: the config's ``relation_phrases``
    (how relations read in the explanation text).
    """
    rows = np.arange(len(recs.users)) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
    width = recs.items.shape[1] if k is None else min(int(k), recs.items.shape[1])
    items = np.asarray(recs.items, dtype=np.int64)[rows, :width]
    paths = np.asarray(recs.paths, dtype=np.int64)[rows, :width]
    users = np.asarray(recs.users, dtype=np.int64)[rows]
    shown = np.cumprod(items >= 0, axis=1).astype(bool)  # a list ends at its first missing item
    r_idx, c_idx = np.nonzero(shown)
    items, paths = items[r_idx, c_idx], paths[r_idx, c_idx]  # [n, L], row-major: users, then ranks
    scores = np.asarray(recs.scores, dtype=np.float64)[rows, :width][r_idx, c_idx].tolist()
    path_scores = (np.asarray(recs.path_scores, dtype=np.float64)[rows, :width][r_idx, c_idx].tolist()
                   if recs.path_scores is not None else [None] * len(items))
    strings = path_strings_block(data, vocab, paths)
    texts = explanations(data, vocab, paths, phrases).tolist()
    node_ids, node_names, node_kinds, relations = _path_parts(data, vocab, paths, strings)
    strings = strings.tolist()
    kg_inside = (node_kinds[:, 2:-1] == NODE_KINDS.index("entity")).any(axis=1).tolist()
    user_tokens = [str(t) for t in np.asarray(data.user_tokens)[users].tolist()]
    item_tokens, titles = np.asarray(data.item_tokens)[items].tolist(), np.asarray(data.item_names)[items].tolist()
    token_ids, item_list = paths.tolist(), items.tolist()
    kinds = node_kinds.tolist()
    grouped: list[list[ExplainedRecommendation]] = [[] for _ in range(len(rows))]
    for n, (r, c) in enumerate(zip(r_idx.tolist(), c_idx.tolist())):  # one record object per item: output only
        nodes = tuple(PathNode(str(i), str(m), NODE_KINDS[t] if t >= 0 else "special")
                      for i, m, t in zip(node_ids[n], node_names[n], kinds[n]))
        grouped[r].append(ExplainedRecommendation(
            user=user_tokens[r], user_index=int(users[r]), rank=c + 1, item=str(item_tokens[n]),
            item_index=item_list[n], score=scores[n], path_score=path_scores[n],
            path_token_ids=tuple(token_ids[n]), path=tuple(strings[n]), explanation=texts[n],
            title=str(titles[n]), nodes=nodes, relations=tuple(str(x) for x in relations[n]),
            explanation_source="knowledge" if kg_inside[n] else "collaborative"))
    return [ExplainedList(user_tokens[r], int(users[r]), tuple(grouped[r])) for r in range(len(rows))]


def explained(recs, data, vocab: Vocabulary, limit: int | None = None, k: int | None = None,
              phrases: Mapping[str, str] | None = None) -> list[dict]:
    """The first ``limit`` users' explained lists as JSON-ready dicts (:meth:`ExplainedList.to_dict`)."""
    n = len(recs.users) if limit is None else min(limit, len(recs.users))
    return [x.to_dict() for x in explained_records(recs, data, vocab, rows=np.arange(n), k=k, phrases=phrases)]


# ------------------------------------------------------------------------------ token columns
def path_strings_block(data, vocab: Vocabulary, paths: np.ndarray, readable: bool = False) -> np.ndarray:
    """Dataset tokens (or, ``readable``, node names) of token ids ``paths [..., L]``, as an object array
    of str: relations by name, specials as ``[PAD]``-style strings."""
    paths = np.asarray(paths, dtype=np.int64)
    table = vocab.dataset_token_table(data, names=readable)
    inside = (paths >= 0) & (paths < vocab.size)
    out = table[np.where(inside, paths, 0)]
    for pos in zip(*np.nonzero(~inside)):  # ids outside the vocabulary (never decoded): as token_string says
        out[pos] = vocab.token_string(int(paths[pos]))
    return out.astype(str).astype(object) if out.size else out  # plain str, whatever the tables hold


def path_strings(dataset, vocab: Vocabulary, path_tokens: np.ndarray, readable: bool = True) -> list[str]:
    """Original dataset tokens (``readable=False``) or readable names of one path's tokens."""
    return path_strings_block(dataset, vocab, np.asarray(path_tokens, dtype=np.int64), readable).tolist()


def _path_parts(data, vocab: Vocabulary, paths: np.ndarray, strings: np.ndarray):
    """Per path ``[n, L]`` (``strings``: its :func:`path_strings_block`): node tokens, node names, node
    kinds (-1: not a node, shown as its string) and relation labels."""
    nodes = vocab.token_node(paths[:, 0::2])
    is_node = (nodes >= 0) & (nodes < vocab.n_nodes)
    safe = np.where(is_node, nodes, 0)
    ids = strings[:, 0::2].tolist()
    names = np.where(is_node, data.node_names()[safe], strings[:, 0::2]).tolist()
    kinds = np.where(is_node, data.graph.node_kind(safe).astype(np.int64), -1)
    rels = vocab.token_relation(paths[:, 1::2])
    labels = np.concatenate([[UI_LABEL], np.asarray(data.relation_tokens, dtype=object)[1:].astype(str)]).astype(object)
    rel_labels = np.where(rels >= 0, labels[np.maximum(rels, 0)], strings[:, 1::2])
    return ids, names, kinds, rel_labels.tolist()


def explanations(data, vocab: Vocabulary, paths: np.ndarray, phrases: Mapping[str, str] | None = None,
                 ui_label: str = UI_LABEL) -> np.ndarray:
    """The readable explanation of every path ``[n, L]`` (object array of str; ``""`` for a path with
    padding), as :func:`explain` words it; built column by column, not token by token."""
    paths = np.asarray(paths, dtype=np.int64).reshape(-1, np.shape(paths)[-1])
    phrases = dict(phrases or {})
    n_users = data.n_users
    nodes = vocab.token_node(paths[:, 0::2])
    rels = vocab.token_relation(paths[:, 1::2])
    complete = ~(paths == PAD).any(axis=1) & (nodes >= 0).all(axis=1) & (rels >= 0).all(axis=1)
    nodes, rels = np.where(complete[:, None], nodes, 0), np.where(complete[:, None], rels, 0)
    used = np.unique(nodes)
    names = data.node_names()[used]
    words = np.array([f"user {m}" if u < n_users else str(m).replace(" ", "_") for u, m in zip(used.tolist(), names)]
                     + [""], dtype=object)
    node_word = words[np.searchsorted(used, nodes)]
    rel_names = [str(r) for r in data.relation_tokens]
    rel_word = np.array([phrases.get(rel_names[0], ui_label)] + [phrases.get(r, r) for r in rel_names[1:]],
                        dtype=object)
    text = np.full(len(paths), "", dtype=object)
    for h in range(rels.shape[1]):  # one column per hop: "node rel node", then " -> rel node"
        word = rel_word[rels[:, h]]
        into_user = (rels[:, h] == 0) & (nodes[:, h + 1] < n_users)  # an item-to-user hop reads "watched by"
        word = np.where(into_user, word + " by", word)
        text = (node_word[:, 0] + " " if h == 0 else text + " -> ") + word + " " + node_word[:, h + 1]
    return np.where(complete, text, "")


def explain(dataset, vocab: Vocabulary, path_tokens: np.ndarray, phrases: Mapping[str, str] | None = None,
            ui_label: str = UI_LABEL) -> str:
    """``user 42 watched Toy_Story -> starring Tom_Hanks -> starring Cast_Away`` for one path.

    Relation names read as their ``phrases`` entry (the dataset config's ``relation_phrases``) or,
    without one, as the raw name; the user-item relation reads as ``ui_label`` ("watched by" when the
    hop goes from an item to a user). Users met inside the path read as ``user <token>``.
    """
    return str(explanations(dataset, vocab, np.asarray(path_tokens, dtype=np.int64)[None], phrases, ui_label)[0])
