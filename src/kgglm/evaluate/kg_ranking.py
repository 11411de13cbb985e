"""Filtered rank-based evaluation of tail prediction ``(h, r, ?)`` (knowledge completion).

Protocol (PyKEEN's default ``RankBasedEvaluator`` in the filtered setting, tail side only):

* **Candidates**: every node in ``[candidate_offset, candidate_offset + n_candidates)`` (for the
  collaborative graph: all items and entities, never users), scored by ``score_fn``.
* **Filtering**: for an evaluated triple ``(h, r, t)`` every *other* known tail ``t'`` with
  ``(h, r, t')`` in ``filter_triples`` or in the evaluated triples themselves is removed from the
  candidates (PyKEEN always adds the evaluation triples to its ``additional_filter_triples``). The
  runner passes train + valid when testing, and train only (plus valid itself) when validating.
  Filtering is directed, as in PyKEEN: ``(t', r, h)`` does not filter ``t'`` for ``(h, r, ?)``.
* **Ties**: ``optimistic = 1 + #{kept c: s_c > s_t}``, ``pessimistic = 1 + #{kept c: s_c >= s_t}``
  (the target itself is not counted), **realistic = (optimistic + pessimistic) / 2** — the
  expected rank under random tie-breaking. MRR is the mean of ``1 / realistic``, Hits@k the share
  with ``realistic <= k``, MR the mean realistic rank (PyKEEN's ``realistic`` rank type).

Variants, each computed from the same scores:

* ``mrr``, ``hits@k``, ``mr``: per triple, all candidates (the headline numbers).
* ``type_*``: type-restricted; the candidates of relation ``r`` are the tails seen with ``r`` in the
  ``type_triples`` (train), still filtered; the target is always ranked even when not among them.
* ``anytail_*``: the KGGLM paper code's grouped protocol: one query per distinct ``(h, r)`` of the
  evaluated triples, a hit at k when *any* of its evaluated tails is in the top k. Its rank is the
  best (smallest) filtered rank of its tails; since all of the query's tails are filtered for each
  other, that is the position of the first correct tail in the ranked list of non-filtered
  candidates. (The paper reports MRR@10 of that list; we report the full-list MRR and MR as well.)

The language model's scores: :class:`TailScorer` (the ``score_fn`` of KGGLM: next-token
log-probabilities of the candidates after ``[BOS] h r``).

Memory: one batch of ``batch_size`` triples times ``n_candidates`` scores and masks at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from kgglm.model.gpt import KGGLM
from kgglm.paths.vocab import BOS, Vocabulary

ScoreFn = Callable[[np.ndarray, np.ndarray], torch.Tensor]  # (heads, relations) -> [B, n_candidates]


class TailIndex:
    """Known tails of every ``(head, relation)``: sorted int64 keys ``head * R + r`` with their tails."""

    def __init__(self, triples: Sequence[np.ndarray] | np.ndarray, n_relations: int) -> None:
        parts = [np.asarray(t, dtype=np.int64).reshape(-1, 3) for t in
                 (triples if isinstance(triples, (list, tuple)) else [triples])]
        t = np.concatenate(parts) if parts else np.zeros((0, 3), np.int64)
        self.n_relations = int(n_relations)
        keys = t[:, 0] * self.n_relations + t[:, 1]
        order = np.lexsort((t[:, 2], keys))
        self.keys, self.tails = keys[order], t[order, 2]

    def mask(self, heads: np.ndarray, relations: np.ndarray, n_candidates: int, offset: int = 0) -> torch.Tensor:
        """Bool ``[B, n_candidates]``: True where column ``c`` (node ``offset + c``) is a known tail."""
        q = np.asarray(heads, dtype=np.int64) * self.n_relations + np.asarray(relations, dtype=np.int64)
        lo, hi = np.searchsorted(self.keys, q, "left"), np.searchsorted(self.keys, q, "right")
        count = hi - lo
        rows = np.repeat(np.arange(len(q)), count)
        idx = np.repeat(lo - np.cumsum(count) + count, count) + np.arange(count.sum())  # lo[row] + i within row
        cols = self.tails[idx] - offset
        ok = (cols >= 0) & (cols < n_candidates)
        out = torch.zeros((len(q), n_candidates), dtype=torch.bool)
        out[torch.from_numpy(rows[ok]), torch.from_numpy(cols[ok])] = True
        return out


def relation_candidates(triples: np.ndarray, n_relations: int, n_candidates: int, offset: int = 0) -> torch.Tensor:
    """Bool ``[n_relations, n_candidates]``: tails seen with each relation in ``triples`` (type restriction)."""
    t = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
    cols = t[:, 2] - offset
    ok = (cols >= 0) & (cols < n_candidates)
    out = torch.zeros((n_relations, n_candidates), dtype=torch.bool)
    out[torch.from_numpy(t[ok, 1]), torch.from_numpy(cols[ok])] = True
    return out


def count_ranks(scores: torch.Tensor, target: torch.Tensor, exclude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(optimistic, pessimistic) ranks of column ``target[i]`` in row ``i`` of ``scores [B, C]``.

    Columns where ``exclude`` is True do not compete; the target's own column never does.
    """
    rows = torch.arange(scores.shape[0])
    s_t = scores[rows, target].unsqueeze(1)
    keep = ~exclude
    keep[rows, target] = False
    opt = 1 + ((scores > s_t) & keep).sum(1)
    pess = 1 + ((scores >= s_t) & keep).sum(1)
    return opt, pess


@dataclass
class TailRanks:
    """Per-triple ranks, in the order of the evaluated triples (float64 arrays)."""

    optimistic: np.ndarray
    pessimistic: np.ndarray
    type_optimistic: np.ndarray | None = None
    type_pessimistic: np.ndarray | None = None

    @property
    def realistic(self) -> np.ndarray:
        return 0.5 * (self.optimistic + self.pessimistic)

    @property
    def type_realistic(self) -> np.ndarray | None:
        if self.type_optimistic is None:
            return None
        return 0.5 * (self.type_optimistic + self.type_pessimistic)


@torch.no_grad()
def tail_ranks(score_fn: ScoreFn, triples: np.ndarray, *, filter_triples: Sequence[np.ndarray], n_relations: int,
               n_candidates: int, candidate_offset: int = 0, type_triples: np.ndarray | None = None,
               batch_size: int = 256) -> TailRanks:
    """Filtered ranks of the tail of every triple (see module docstring for the protocol).

    Triples are processed grouped by ``(h, r)`` so that each distinct query is scored once per batch.
    """
    triples = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
    n = len(triples)
    if n and ((triples[:, 2] < candidate_offset) | (triples[:, 2] >= candidate_offset + n_candidates)).any():
        hi = candidate_offset + n_candidates
        raise ValueError(f"a tail is outside the candidate nodes [{candidate_offset}, {hi})")
    index = TailIndex([*filter_triples, triples], n_relations)
    allowed = relation_candidates(type_triples, n_relations, n_candidates, candidate_offset) \
        if type_triples is not None else None
    order = np.lexsort((triples[:, 1], triples[:, 0]))
    out = {k: np.zeros(n) for k in ("o", "p", "to", "tp")}
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        batch = triples[idx]
        qkey = batch[:, 0] * n_relations + batch[:, 1]
        uniq, first, inv = np.unique(qkey, return_index=True, return_inverse=True)
        heads, rels = batch[first, 0], batch[first, 1]
        scores = torch.as_tensor(score_fn(heads, rels)).detach().float().cpu()
        if scores.shape != (len(uniq), n_candidates):
            raise ValueError(f"score_fn returned shape {tuple(scores.shape)}, expected ({len(uniq)}, {n_candidates})")
        known = index.mask(heads, rels, n_candidates, candidate_offset)
        inv_t = torch.from_numpy(inv)
        s, k = scores[inv_t], known[inv_t]
        target = torch.from_numpy(batch[:, 2] - candidate_offset)
        o, p = count_ranks(s, target, k)
        out["o"][idx], out["p"][idx] = o.numpy(), p.numpy()
        if allowed is not None:
            o, p = count_ranks(s, target, k | ~allowed[torch.from_numpy(batch[:, 1])])
            out["to"][idx], out["tp"][idx] = o.numpy(), p.numpy()
    return TailRanks(out["o"], out["p"], out["to"] if allowed is not None else None,
                     out["tp"] if allowed is not None else None)


def rank_metrics(ranks: np.ndarray, ks: Sequence[int] = (1, 3, 10), prefix: str = "") -> dict[str, float]:
    """MRR, MR and Hits@k of (realistic, possibly fractional) ranks."""
    r = np.asarray(ranks, dtype=np.float64)
    if r.size == 0:
        return {f"{prefix}mrr": 0.0, f"{prefix}mr": 0.0, **{f"{prefix}hits@{k}": 0.0 for k in ks}}
    out = {f"{prefix}mrr": float(np.mean(1.0 / r)), f"{prefix}mr": float(np.mean(r))}
    out.update({f"{prefix}hits@{k}": float(np.mean(r <= k)) for k in ks})
    return out


def anytail_ranks(triples: np.ndarray, ranks: np.ndarray, n_relations: int) -> np.ndarray:
    """Best rank per distinct ``(h, r)`` query (the paper's grouped "any tail" protocol)."""
    t = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
    if len(t) == 0:
        return np.zeros(0)
    key = t[:, 0] * n_relations + t[:, 1]
    order = np.argsort(key, kind="stable")
    k = key[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    return np.minimum.reduceat(np.asarray(ranks, dtype=np.float64)[order], starts)


def evaluate_tail_ranking(score_fn: ScoreFn, triples: np.ndarray, *, filter_triples: Sequence[np.ndarray],
                          n_relations: int, n_candidates: int, candidate_offset: int = 0,
                          type_triples: np.ndarray | None = None, ks: Sequence[int] = (1, 3, 10),
                          batch_size: int = 256) -> dict[str, float]:
    """All metrics of the module docstring: ``mrr, mr, hits@k``, ``type_*``, ``anytail_*`` and counts."""
    ranks = tail_ranks(score_fn, triples, filter_triples=filter_triples, n_relations=n_relations,
                       n_candidates=n_candidates, candidate_offset=candidate_offset, type_triples=type_triples,
                       batch_size=batch_size)
    metrics = rank_metrics(ranks.realistic, ks)
    metrics["optimistic_mrr"] = rank_metrics(ranks.optimistic, ks)["mrr"]
    metrics["pessimistic_mrr"] = rank_metrics(ranks.pessimistic, ks)["mrr"]
    if ranks.type_realistic is not None:
        metrics.update(rank_metrics(ranks.type_realistic, ks, "type_"))
    best = anytail_ranks(triples, ranks.realistic, n_relations)
    metrics.update(rank_metrics(best, ks, "anytail_"))
    rr10 = np.where(best <= 10, 1.0 / np.maximum(best, 1), 0.0)  # the paper's MRR@10 of the ranked list
    metrics["anytail_mrr@10"] = float(np.mean(rr10)) if best.size else 0.0
    metrics["n_triples"] = float(len(triples))
    metrics["anytail_queries"] = float(len(best))
    return metrics


# ------------------------------------------------------------------------------------------ the model's scores
def candidate_offset(vocab: Vocabulary) -> int:
    """The first item token: candidate tails are the item and entity tokens (users never are)."""
    return int(vocab.node_token(vocab.n_users))


def tail_logits(model: KGGLM, prompts: torch.Tensor, lo: int) -> torch.Tensor:
    """``[B, vocab - lo]`` float logits of the tokens from ``lo`` on, next after each prompt row."""
    h = model.hidden_states(prompts)[:, -1]  # only the last position's logits are needed
    return F.linear(h, model.output_embeddings()[lo:]).float()


class TailScorer:
    """``(heads, relations) -> [B, n_candidates]`` log-probabilities of every item/entity node as the
    next token after ``[BOS] h r`` (normalised over the candidate nodes; ranking is unaffected)."""

    def __init__(self, model: KGGLM, vocab: Vocabulary) -> None:
        self.model, self.vocab = model, vocab
        self.lo = candidate_offset(vocab)
        self.device = model.output_embeddings().device

    @property
    def n_candidates(self) -> int:
        return self.vocab.size - self.lo

    @torch.no_grad()
    def __call__(self, heads: np.ndarray, relations: np.ndarray) -> torch.Tensor:
        prompt = np.column_stack([np.full(len(heads), BOS), self.vocab.node_token(heads),
                                  self.vocab.relation_token(relations)])
        x = torch.from_numpy(prompt).to(self.device)
        was_training = self.model.training
        self.model.eval()
        logits = tail_logits(self.model, x, self.lo)
        self.model.train(was_training)
        return torch.log_softmax(logits, dim=-1).cpu()
