"""Top-k recommendations with their explanation paths, readable explanations and JSON-lines export.

``recommend(model, dataset, users)`` runs the constrained beam search in user batches and returns
:class:`Recommendations`: item indices, scores and path tokens per user (optionally the full
``[users, items]`` best-path score matrix). ``explain`` turns a path into text such as
``user 42 watched Toy_Story -> starred_by_actor Tom_Hanks -> starred_by_actor Cast_Away``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kgglm.decode.beam_search import beam_search
from kgglm.decode.constraints import GraphConstraint
from kgglm.paths.vocab import PAD, RELATION_OFFSET, Vocabulary

log = logging.getLogger(__name__)

GENERATION_KEYS = ("num_beams", "length_penalty", "do_sample", "top_k", "top_p", "temperature",
                   "ranking", "max_num_beams")


@dataclass
class Recommendations:
    """Per evaluated user: ranked distinct items, their best-path scores and paths (token ids).

    Missing entries (fewer reachable items than asked) have item ``-1``, score ``-inf`` and a
    path of ``[PAD]`` tokens.
    """

    users: np.ndarray  # [n] user indices
    items: np.ndarray  # [n, K] item indices
    scores: np.ndarray  # [n, K] float32
    paths: np.ndarray  # [n, K, 2H+1] token ids: U r1 n1 ... rH item
    split: str = "test"
    item_scores: np.ndarray | None = None  # [n, n_items], -inf for unreached items

    @property
    def topk(self) -> int:
        return int(self.items.shape[1])

    @property
    def hop_length(self) -> int:
        return (int(self.paths.shape[2]) - 1) // 2


def default_excluded_splits(split: str) -> list[str]:
    """Splits whose items a user must not be recommended: train (and valid when testing)."""
    if split not in ("train", "valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    return ["train", "valid"] if split == "test" else ["train"]


def users_with_items(dataset, split: str) -> np.ndarray:
    """Sorted users with at least one interaction in ``split``."""
    return np.unique(np.asarray(dataset.splits[split].users, dtype=np.int64))


def model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def make_constraint(dataset, vocab: Vocabulary | None = None, *, split: str = "test", hop_length: int = 3,
                    device=None) -> GraphConstraint:
    """The decoding constraint for ``split``: the training graph, excluding seen items."""
    vocab = vocab or Vocabulary.from_graph(dataset.graph, dataset.name)
    excluded = [dataset.splits[s] for s in default_excluded_splits(split)]
    return GraphConstraint(dataset.graph, vocab, hop_length=hop_length, device=device or "cpu",
                           excluded=excluded)


def recommend(model, dataset, users=None, *, vocab: Vocabulary | None = None, split: str = "test",
              topk: int = 10, num_beams: int = 20, paths_per_user: int | None = None, hop_length: int = 3,
              batch_size: int = 32, device=None, return_item_scores: bool = False,
              constraint: GraphConstraint | None = None, show_progress: bool = False,
              **generation_args) -> Recommendations:
    """Recommend ``max(topk, paths_per_user)`` distinct unseen items per user, each with its path.

    Args:
        model: a KGGLM (or any model with the same ``forward``); it is put in eval mode.
        dataset: a :class:`kgglm.data.Dataset` (its graph is built from training interactions).
        users: user indices; default: users with at least one item in ``split``.
        split: ``'test'`` excludes train and valid items, ``'valid'`` excludes train items.
        generation_args: ``length_penalty``, ``do_sample``, ``top_k``, ``top_p``, ``temperature``,
            ``ranking`` (``'logprob'``/``'cumulative'``), ``max_num_beams``; other keys of
            hopwise's ``path_generation_args`` (e.g. ``num_beam_groups``) are ignored.
    """
    device = torch.device(device) if device is not None else model_device(model)
    vocab = vocab or Vocabulary.from_graph(dataset.graph, dataset.name)
    if constraint is None:
        constraint = make_constraint(dataset, vocab, split=split, hop_length=hop_length, device=device)
    users = users_with_items(dataset, split) if users is None else np.asarray(users, dtype=np.int64).reshape(-1)
    n_return = max(int(topk), int(paths_per_user or 0))
    args = {k: v for k, v in generation_args.items() if k in GENERATION_KEYS}
    ignored = sorted(set(generation_args) - set(GENERATION_KEYS) - {"paths_per_user"})
    if ignored:
        log.info("recommend: generation args not used by this decoder: %s", ignored)
    was_training = getattr(model, "training", False)
    model.eval()
    parts = []
    batches = range(0, len(users), batch_size)
    if show_progress:
        from tqdm import tqdm
        batches = tqdm(batches, desc=f"recommend {split}", unit="batch")
    try:
        for start in batches:
            out = beam_search(model, constraint, users[start:start + batch_size], num_beams=num_beams,
                              n_return=n_return, return_item_scores=return_item_scores, **args)
            parts.append(out)
    finally:
        if was_training:
            model.train()

    def cat(name, empty_shape, dtype):
        if not parts:
            return np.zeros(empty_shape, dtype=dtype)
        return np.concatenate([getattr(p, name).cpu().numpy() for p in parts]).astype(dtype, copy=False)

    n_items = dataset.graph.n_items
    k = min(n_return, n_items)
    return Recommendations(
        users=users.copy(),
        items=cat("items", (0, k), np.int64),
        scores=cat("scores", (0, k), np.float32),
        paths=cat("paths", (0, k, constraint.body_length), np.int64),
        split=split,
        item_scores=cat("item_scores", (0, n_items), np.float32) if return_item_scores else None,
    )


# ---------------------------------------------------------------------------------- explanations
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


def explain(dataset, vocab: Vocabulary, path_tokens: np.ndarray, ui_label: str = "watched") -> str:
    """``user 42 watched Toy_Story -> starred_by_actor Tom_Hanks -> ...`` for one path.

    The user-item relation reads as ``ui_label`` (its dataset name is a placeholder such as
    ``[UI-Relation]``); users met inside the path read as ``user <token>``.
    """
    tokens = np.asarray(path_tokens, dtype=np.int64)
    if (tokens == PAD).any():
        return ""
    names = dataset.node_names()
    n_users = dataset.n_users

    def node(tok: int) -> str:
        idx = tok - vocab.node_offset
        name = str(names[idx])
        return f"user {name}" if idx < n_users else name.replace(" ", "_")

    def rel(tok: int) -> str:
        r = tok - RELATION_OFFSET
        return ui_label if r == 0 else str(dataset.relation_tokens[r])

    parts = [f"{node(tokens[0])} {rel(tokens[1])} {node(tokens[2])}"]
    parts += [f"{rel(tokens[i])} {node(tokens[i + 1])}" for i in range(3, len(tokens) - 1, 2)]
    return " -> ".join(parts)


# ---------------------------------------------------------------------------------- export
def write_recommendations(recs: Recommendations, dataset, vocab: Vocabulary, path: str | os.PathLike,
                          ui_label: str = "watched") -> Path:
    """JSON lines, one per (user, rank): user, rank, item, score, path tokens, readable path.

    Written to a temporary file then renamed, so a crash never leaves a half-written export.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    node_tokens = dataset.node_tokens()
    with open(tmp, "w", encoding="utf-8") as f:
        rows, ranks = np.nonzero(recs.items >= 0)  # only real recommendations
        for r, k in zip(rows.tolist(), ranks.tolist()):  # export only, not a hot path
            u, item = int(recs.users[r]), int(recs.items[r, k])
            toks = recs.paths[r, k]
            f.write(json.dumps({
                "user": str(node_tokens[u]), "user_index": u, "rank": k + 1,
                "item": str(dataset.item_tokens[item]), "item_index": item,
                "score": float(recs.scores[r, k]),
                "path_token_ids": [int(t) for t in toks],
                "path": path_strings(dataset, vocab, toks, readable=False),
                "explanation": explain(dataset, vocab, toks, ui_label),
                "split": recs.split, "topk": recs.topk,
            }, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def read_recommendations(path: str | os.PathLike) -> Recommendations:
    """Read a :func:`write_recommendations` file back (item scores are not exported)."""
    path = Path(path)
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                records.append((int(rec["user_index"]), int(rec["rank"]), int(rec["item_index"]),
                                float(rec["score"]), rec["path_token_ids"], rec.get("split", "test"),
                                int(rec.get("topk", rec["rank"]))))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{lineno}: bad recommendation record ({e})") from e
    if not records:
        return Recommendations(np.zeros(0, np.int64), np.zeros((0, 0), np.int64),
                               np.zeros((0, 0), np.float32), np.zeros((0, 0, 0), np.int64))
    users = np.array([r[0] for r in records], dtype=np.int64)
    ranks = np.array([r[1] for r in records], dtype=np.int64)
    uniq, first, row = np.unique(users, return_index=True, return_inverse=True)
    order = np.argsort(first)  # keep the users in file order
    remap = np.empty_like(order)
    remap[order] = np.arange(len(order))
    row = remap[row]
    k, length = max(int(ranks.max()), max(r[6] for r in records)), len(records[0][4])
    items = np.full((len(uniq), k), -1, dtype=np.int64)
    scores = np.full((len(uniq), k), -np.inf, dtype=np.float32)
    paths = np.full((len(uniq), k, length), PAD, dtype=np.int64)
    items[row, ranks - 1] = [r[2] for r in records]
    scores[row, ranks - 1] = [r[3] for r in records]
    paths[row, ranks - 1] = np.array([r[4] for r in records], dtype=np.int64)
    return Recommendations(users=uniq[order], items=items, scores=scores, paths=paths, split=records[0][5])
