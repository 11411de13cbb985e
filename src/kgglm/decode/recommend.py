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
import weakref
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from kgglm import durable
from kgglm.decode.beam_search import beam_search, item_paths, path_log_probs
from kgglm.decode.constraints import GraphConstraint
from kgglm.decode.explain import explained_records
from kgglm.decode.generation import PathGenerationConfig
from kgglm.decode.postprocess import select_explanations
from kgglm.evaluate.ranked import Recommendations
from kgglm.paths.vocab import PAD, Vocabulary

logger = logging.getLogger(__name__)

def model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def make_constraint(dataset, vocab: Vocabulary, *, split: str, hop_length: int, device=None,
                    knowledge_only: bool = False, avoid_relations: tuple[str, ...] = ()) -> GraphConstraint:
    """The decoding constraint for ``split``: the training graph, excluding the items seen before it.

    Built once per dataset object and settings (building one walks the whole graph; every evaluation
    during training asks for it again): the memo is this module's, keyed by the dataset's identity and
    dropped with the dataset.
    """
    device = torch.device(device or "cpu")
    key = (split, int(hop_length), str(device), bool(knowledge_only), tuple(avoid_relations))
    memo = _constraint_memo(dataset)
    if key not in memo:
        names = [str(r) for r in dataset.relation_tokens]
        unknown = [r for r in avoid_relations if r not in names]
        if unknown:
            raise ValueError(f"path_generation_args.avoid_relations: unknown relation(s) {unknown} in dataset "
                             f"{dataset.name} (relations: {', '.join(names[1:])})")
        memo[key] = GraphConstraint(dataset.graph, vocab, hop_length=hop_length, device=device,
                                    excluded=dataset.seen_items(split), knowledge_only=knowledge_only,
                                    forbidden_relations=[names.index(r) for r in avoid_relations])
    return memo[key]


_CONSTRAINTS: dict[int, dict[tuple, GraphConstraint]] = {}  # id(dataset) -> its constraints, while it lives


def _constraint_memo(dataset) -> dict[tuple, GraphConstraint]:
    key = id(dataset)
    if key not in _CONSTRAINTS:
        _CONSTRAINTS[key] = {}
        weakref.finalize(dataset, _CONSTRAINTS.pop, key, None)  # a later object with the same id starts afresh
    return _CONSTRAINTS[key]


def recommend(model, dataset, users, *, vocab: Vocabulary, generation: PathGenerationConfig, n_return: int,
              split: str = "test", batch_size: int, device=None, return_item_scores: bool = False,
              constraint: GraphConstraint | None = None, show_progress: bool = False) -> Recommendations:
    """Recommend ``n_return`` distinct unseen items per user, each with its explanation path.

    Args:
        model: a KGGLM (or any model with the same ``forward``); it is put in eval mode and its
            training mode is restored afterwards.
        dataset: a :class:`kgglm.data.Dataset` (its graph is built from training interactions).
        users: user indices (e.g. ``dataset.eval_users(split)``).
        generation: the decoding settings (:class:`PathGenerationConfig`).
        n_return: items per user.
        split: ``'test'`` excludes train and valid items, ``'valid'`` excludes train items.
        batch_size: users decoded together (``eval_batch_size``).
    """
    device = torch.device(device) if device is not None else model_device(model)
    if constraint is None:
        constraint = make_constraint(dataset, vocab, split=split, hop_length=generation.path_hop_length,
                                     device=device, knowledge_only=generation.knowledge_only)
    explainers = _knowledge_constraints(dataset, vocab, split, generation, device) \
        if generation.explanation in ("knowledge", "post") else []
    n_candidates = generation.explanation_candidates if generation.explanation == "post" else 1
    users = np.asarray(users, dtype=np.int64).reshape(-1)
    was_training = getattr(model, "training", False)
    model.eval()
    parts = []
    batches = range(0, len(users), batch_size)
    if show_progress:
        from tqdm import tqdm
        batches = tqdm(batches, desc=f"recommend {split}", unit="batch")
    try:
        for start in batches:
            out = beam_search(model, constraint, users[start:start + batch_size], generation,
                              n_return=n_return, return_item_scores=return_item_scores, n_candidates=n_candidates)
            with torch.inference_mode():
                out.path_scores = out.scores.clone()
            best = (out.paths.clone(), out.path_scores.clone())
            for explainer in explainers:  # knowledge paths replace the shown path, never the ranking
                _explain_through_knowledge(model, explainer, out, generation, constraint)
            if generation.explanation == "post":
                _post_process(out, best, dataset, vocab, generation.explanation_alpha)
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
        path_scores=cat("path_scores", (0, k), np.float32),
    )


def _post_process(out, best: tuple[torch.Tensor, torch.Tensor], dataset, vocab: Vocabulary, alpha: float) -> None:
    """SIGIR 2022 re-selection (:mod:`kgglm.decode.postprocess`) among the item's decoded candidates and
    its knowledge path (already in ``out.paths`` when one was found); writes ``out.paths``/``path_scores``."""
    cand_paths, cand_scores = out.candidate_paths.cpu().numpy(), out.candidate_scores.cpu().numpy()
    knowledge = (out.paths != best[0]).any(-1).cpu().numpy()  # items whose knowledge path is new
    kg_path = out.paths.cpu().numpy()[:, :, None]
    kg_score = np.where(knowledge, out.path_scores.cpu().numpy(), -np.inf)[:, :, None]
    paths, scores = select_explanations(out.users.cpu().numpy(), np.concatenate([cand_paths, kg_path], axis=2),
                                        np.concatenate([cand_scores, kg_score], axis=2), alpha=alpha,
                                        tables=dataset.explanation_tables(), vocab=vocab)
    found = np.isfinite(scores)
    out.paths = torch.where(torch.as_tensor(found).unsqueeze(-1), torch.as_tensor(paths), out.paths.cpu())
    out.path_scores = torch.where(torch.as_tensor(found), torch.as_tensor(scores, dtype=torch.float32),
                                  out.path_scores.cpu())


def _knowledge_constraints(dataset, vocab, split, generation, device) -> list[GraphConstraint]:
    """The knowledge-explanation searches, in order of preference: KG paths avoiding the
    ``avoid_relations``, then (if any are avoided) KG paths through them."""
    kw = dict(split=split, hop_length=generation.path_hop_length, device=device, knowledge_only=True)
    out = [make_constraint(dataset, vocab, avoid_relations=generation.avoid_relations, **kw)]
    if generation.avoid_relations:
        out.append(make_constraint(dataset, vocab, **kw))
    return out


@torch.inference_mode()
def _explain_through_knowledge(model, explainer: GraphConstraint, out, generation,
                               ranking_constraint: GraphConstraint) -> None:
    """Replace, in place, the shown path of every recommended item that has no KG path yet by the
    most probable path the model decodes to it under ``explainer`` (knowledge only), if any."""
    has_kg = (explainer.vocab.token_node(out.paths[..., 2:-1:2]) >= explainer.graph.entity_offset).any(-1)
    if explainer.forbidden_relations:  # a KG path through an avoided relation is not good enough yet
        rels = explainer.vocab.token_relation(out.paths[..., 1::2])
        forbidden = torch.as_tensor(explainer.forbidden_relations, device=rels.device)
        has_kg &= ~torch.isin(rels, forbidden).any(-1)
    todo = (out.items >= 0) & ~has_kg
    if not bool(todo.any()):
        return
    rows = todo.any(1).nonzero().squeeze(1)
    targets = torch.where(todo[rows], out.items[rows], -1)
    paths, scores = item_paths(model, explainer, out.users[rows], targets,
                               generation.replace(num_beams=generation.explanation_num_beams))
    found = torch.isfinite(scores) & todo[rows]
    if bool(found.any()):  # score the new paths as the ranking scores paths (under its constraint)
        scores[found] = path_log_probs(model, ranking_constraint, paths[found], generation.last_hop_norm)
    sub_paths, sub_scores = out.paths[rows], out.path_scores[rows]
    sub_paths[found] = paths[found]
    sub_scores[found] = scores[found]
    out.paths[rows], out.path_scores[rows] = sub_paths, sub_scores


# ---------------------------------------------------------------------------------- export
def write_recommendations(recs: Recommendations, dataset, vocab: Vocabulary, path: str | os.PathLike,
                          phrases: Mapping[str, str] | None = None) -> Path:
    """JSON lines, one per (user, rank): the :class:`~kgglm.decode.explain.ExplainedRecommendation`
    record (user, rank, item, score, path tokens, readable path and explanation, nodes, relations)
    plus ``split`` and ``topk``.

    Written durably (:mod:`kgglm.durable`), so a crash never leaves a half-written export.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with durable.open_atomic(path, "w") as f:
        for start in range(0, len(recs.users), _EXPORT_USERS):  # records of a block of users at a time
            block = explained_records(recs, dataset, vocab, rows=np.arange(start, min(start + _EXPORT_USERS,
                                                                                      len(recs.users))),
                                      phrases=phrases)
            f.writelines(json.dumps({**rec.to_dict(), "split": recs.split, "topk": recs.topk},
                                    ensure_ascii=False) + "\n" for lst in block for rec in lst.recommendations)
    return path


_EXPORT_USERS = 1024  # users whose records are built together by the export (bounds its memory)


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
