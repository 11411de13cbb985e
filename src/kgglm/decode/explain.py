"""Explanations: a decoded path as dataset tokens, as readable text, and explained top-k lists.

``explain`` turns a path into text such as
``user 42 watched Toy_Story -> starred_by_actor Tom_Hanks -> starred_by_actor Cast_Away``;
``explained`` gives a few users' recommendations as plain dicts for printing, JSON and serving.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from kgglm.paths.vocab import PAD, RELATION_OFFSET, Vocabulary


def path_strings(dataset, vocab: Vocabulary, path_tokens: np.ndarray, readable: bool = True) -> list[str]:
    """Original dataset tokens (``readable=False``) or readable names of one path's tokens."""
    node_names = dataset.node_names() if readable else dataset.node_tokens()
    out = []
    for tok in np.asarray(path_tokens, dtype=np.int64).tolist():
        if RELATION_OFFSET <= tok < vocab.node_offset:
            out.append(str(dataset.relation_tokens[tok - RELATION_OFFSET]))
        elif vocab.node_offset <= tok < vocab.size:
            out.append(str(node_names[tok - vocab.node_offset]))
        else:
            out.append(vocab.token_string(tok))
    return out


def explain(dataset, vocab: Vocabulary, path_tokens: np.ndarray, phrases: Mapping[str, str] | None = None,
            ui_label: str = "watched") -> str:
    """``user 42 watched Toy_Story -> starring Tom_Hanks -> starring Cast_Away`` for one path.

    Relation names read as their ``phrases`` entry (the dataset config's ``relation_phrases``) or,
    without one, as the raw name; the user-item relation reads as ``ui_label`` ("watched by" when the
    hop goes from an item to a user). Users met inside the path read as ``user <token>``.
    """
    tokens = np.asarray(path_tokens, dtype=np.int64)
    if (tokens == PAD).any():
        return ""
    phrases = dict(phrases or {})
    names = dataset.node_names()
    n_users = dataset.n_users

    def node(tok: int) -> str:
        idx = tok - vocab.node_offset
        name = str(names[idx])
        return f"user {name}" if idx < n_users else name.replace(" ", "_")

    def rel(tok: int, next_tok: int) -> str:
        r = tok - RELATION_OFFSET
        name = str(dataset.relation_tokens[r])
        if r == 0:
            label = phrases.get(name, ui_label)
            return f"{label} by" if 0 <= next_tok - vocab.node_offset < n_users else label
        return phrases.get(name, name)

    parts = [f"{node(tokens[0])} {rel(tokens[1], tokens[2])} {node(tokens[2])}"]
    parts += [f"{rel(tokens[i], tokens[i + 1])} {node(tokens[i + 1])}" for i in range(3, len(tokens) - 1, 2)]
    return " -> ".join(parts)


def explained(recs, data, vocab: Vocabulary, limit: int | None = None, k: int | None = None,
              phrases: Mapping[str, str] | None = None) -> list[dict]:
    """Recommendations as plain dicts with raw path tokens and readable explanations (the first
    ``limit`` users; ``phrases``: the config's ``relation_phrases``)."""
    out = []
    n = len(recs.users) if limit is None else min(limit, len(recs.users))
    for r in range(n):  # a handful of users for display/JSON: not a hot path
        u = int(recs.users[r])
        rows = []
        for rank in range(recs.items.shape[1] if k is None else min(k, recs.items.shape[1])):
            item = int(recs.items[r, rank])
            if item < 0:
                break
            toks = recs.paths[r, rank]
            rows.append({"rank": rank + 1, "item": str(data.item_tokens[item]), "item_name": str(data.item_names[item]),
                         "score": float(recs.scores[r, rank]),
                         "path_score": float(recs.path_scores[r, rank]) if recs.path_scores is not None else None,
                         "path": path_strings(data, vocab, toks, readable=False),
                         "explanation": explain(data, vocab, toks, phrases)})
        out.append({"user": str(data.user_tokens[u]), "recommendations": rows})
    return out
