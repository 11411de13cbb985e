"""Batched, KG-constrained beam search over users, and ranking of the items the beams reach.

For a batch of users the prompt ``[BOS] U`` is run once; then ``2 * hop_length - 1`` steps of
standard beam search (scores = sums of log-probabilities of the masked, renormalised next-token
distribution) keep ``num_beams`` prefixes per user, with the model's KV cache reordered as beams
are selected. The last step is different: instead of selecting ``num_beams`` (beam, item) pairs,
which can collapse onto a few items when many beams end on the same one, every legal item of
every beam is scored and the best path per (user, item) is kept (it is the item's explanation).
Items are ranked by ``ranking``: ``marginal`` (the default) sums the probabilities of all decoded
paths that reach the item, i.e. each of the ``num_beams`` prefixes spreads its probability over
the unseen items it can end on (``last_hop_norm: legal``) and an item collects what reaches it;
``logprob`` ranks by the best path alone (the paper's decoding). This also gives the full
``[users, items]`` score matrix (``-inf`` where no beam reached the item).

If a user still has fewer than ``n_return`` distinct items and the search pruned some prefixes
for that user, the user is searched again with 4x the beams, until enough items are found or the
search kept every legal prefix (then the graph simply cannot reach more).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from kgglm.decode.constraints import NEG_INF, GraphConstraint
from kgglm.decode.generation import PathGenerationConfig
from kgglm.decode.pair_scores import (
    dense_pairs,
    item_normalised,
    masked_log_softmax,
    pair_logits,
    segment_log_softmax,
    sparse_head,
)
from kgglm.paths.vocab import BOS, PAD

logger = logging.getLogger(__name__)



@dataclass
class BeamSearchOutput:
    """Per user: ``n_return`` distinct items (best first), their scores and best paths.

    ``paths`` are token ids ``U r1 n1 ... rH nH`` (no [BOS]); missing entries have item ``-1``,
    score ``-inf`` and ``[PAD]`` tokens.
    """

    users: torch.Tensor  # [B] user indices
    items: torch.Tensor  # [B, K] item indices, -1 where fewer were reachable
    scores: torch.Tensor  # [B, K] float
    paths: torch.Tensor  # [B, K, 2H+1] token ids
    n_found: torch.Tensor  # [B] distinct items reached by the final beams
    exhaustive: torch.Tensor  # [B] bool: no legal prefix was pruned for this user
    item_scores: torch.Tensor | None = None  # [B, n_items], -inf for unreached items
    stats: dict = field(default_factory=dict)
    path_scores: torch.Tensor | None = None  # [B, K] log-prob of the shown path, when it is not the best one
    candidate_paths: torch.Tensor | None = None  # [B, K, M, 2H+1] the M most probable decoded paths per item
    candidate_scores: torch.Tensor | None = None  # [B, K, M] their log-probabilities (-inf: fewer paths)


def _empty_output(users, n_return, n_items, width, return_item_scores) -> BeamSearchOutput:
    b, device = users.shape[0], users.device
    kk = min(n_return, n_items)
    return BeamSearchOutput(users=users, items=torch.full((b, kk), -1, device=device),
                            scores=torch.full((b, kk), NEG_INF, device=device),
                            paths=torch.full((b, kk, width), PAD, device=device),
                            n_found=torch.zeros(b, dtype=torch.long, device=device),
                            exhaustive=torch.ones(b, dtype=torch.bool, device=device),
                            item_scores=torch.full((b, n_items), NEG_INF, device=device)
                            if return_item_scores else None)


@dataclass(frozen=True)
class _Wanted:
    """What one search pass returns: ``n_return`` items per user (or, with ``targets [B, K]``, the
    best path of those items, ``-1``: none), the item score matrix, ``n_candidates`` paths per item."""

    n_return: int
    item_scores: bool = False
    targets: torch.Tensor | None = None
    n_candidates: int = 1


@torch.inference_mode()
def _search(model, constraint: GraphConstraint, users: torch.Tensor, gen: PathGenerationConfig, want: _Wanted, *,
            num_beams: int, generator: torch.Generator | None = None, sparse: bool = True) -> BeamSearchOutput:
    """One beam-search pass with a fixed beam width (see module docstring).

    Each step works on the legal ``(row, token)`` pairs: per user, the candidates of all its beams
    are laid out in a padded ``[users, candidates]`` matrix and the best ``num_beams`` kept.
    """
    device = constraint.device
    n_steps = 2 * constraint.hop_length  # generated tokens after the prompt
    b = users.shape[0]
    head = sparse_head(model) if sparse and not gen.do_sample else None
    prompt = torch.stack([torch.full_like(users, BOS), constraint.vocab.user_token(users)], dim=1)
    if head is not None:
        cache = model.new_cache(b, capacity=constraint.body_length + 1)
        state = head[0](prompt, cache)[:, -1]
    else:
        logits, cache = model(prompt, use_cache=True)
        state = logits[:, -1]
    # the user-history expert (a model trained with a history loss): log p(item | user, history)
    expert = getattr(model, "history_log_probs", None) if gen.history_weight > 0 else None
    hist_lp = expert(prompt[:, 1]) if expert is not None else None
    seqs = prompt  # [B * k, T]
    k = 1  # beams per user so far
    beam_scores = torch.zeros(b, device=device)  # [B * k] sum of log-probs
    prob_sum = torch.zeros(b, device=device)  # [B * k] sum of probabilities (cumulative ranking)
    exhaustive = torch.ones(b, dtype=torch.bool, device=device)
    for step in range(n_steps):
        rows, toks, lp, warped = _step_pairs(constraint, head, state, seqs, gen, last=step == n_steps - 1)
        if step == n_steps - 1:
            break
        score = beam_scores[rows] + lp
        key = score
        if warped is not None:  # Gumbel-top-k: sample prefixes without replacement
            u = torch.rand(rows.shape[0], device=device, generator=generator).clamp_(1e-20, 1.0)
            key = beam_scores[rows] + warped - torch.log(-torch.log(u))
        chosen = _select(rows, toks, key, k, b, num_beams, device)
        if chosen is None:  # no user has a legal continuation
            return _empty_output(users, want.n_return, constraint.graph.n_items, constraint.body_length,
                                 want.item_scores)
        src, token, pair, alive, counts, width = chosen
        exhaustive &= counts <= num_beams
        beam_scores = torch.where(alive, score[pair], NEG_INF)
        prob_sum = prob_sum[src] + torch.where(alive, lp[pair].exp(), 0.0)
        seqs = torch.cat([seqs[src], token], dim=1)
        cache.reorder(src)
        if head is not None:
            state = head[0](token, cache)[:, -1]
        else:
            logits, cache = model(token, past_key_values=cache, use_cache=True)
            state = logits[:, -1]
        k = width
    final = _FinalPairs(rows, toks, lp, beam_scores[rows] + lp, (rows // k) * constraint.graph.n_items
                        + constraint.vocab.token_item(toks))
    best, best_pair = _rank_items(final, prob_sum, k, b, n_steps, gen, constraint.graph.n_items, hist_lp, device)
    return _output(users, seqs, final, best, best_pair, exhaustive, want, constraint)


def _step_pairs(constraint, head, state, seqs, gen: PathGenerationConfig, *, last: bool):
    """The legal ``(rows, toks)`` pairs of the next token, their log-probabilities and (sampling) warped
    log-probabilities; the last hop normalised over all items when ``last_hop_norm='items'``."""
    items_norm = last and gen.last_hop_norm == "items"
    if head is None:
        return dense_pairs(constraint, seqs, state, gen.do_sample, gen.temperature, gen.top_k, gen.top_p, items_norm)
    rows, toks = constraint.allowed_pairs(seqs)
    logits = pair_logits(state, head[1], rows, toks)
    if items_norm:
        return rows, toks, item_normalised(state, head[1], constraint, rows, logits), None
    return rows, toks, segment_log_softmax(logits, rows, seqs.shape[0]), None


def _select(rows, toks, key, k: int, b: int, num_beams: int, device):
    """The best ``num_beams`` prefixes per user among the pairs by ``key`` (the prefix's log-probability,
    or its Gumbel-top-k key when sampling):
    ``(source row, token, pair, alive, pairs per user, width)`` of the kept beams, ``[B * width]``
    (dead beams: ``[PAD]``), or None when no user has a legal pair."""
    n_pairs = rows.shape[0]
    user = rows // k
    counts = torch.bincount(user, minlength=b)
    max_count = int(counts.max()) if n_pairs else 0
    if max_count == 0:
        return None
    width = min(num_beams, max_count)
    starts = torch.cumsum(counts, 0) - counts
    dense = torch.full((b, max_count), NEG_INF, device=device)
    dense[user, torch.arange(n_pairs, device=device) - starts[user]] = key
    sel, j = torch.topk(dense, width, dim=1)
    alive = torch.isfinite(sel)
    pair = (starts.unsqueeze(1) + j).clamp_(max=n_pairs - 1)
    src = torch.where(alive, rows[pair], torch.arange(b, device=device).unsqueeze(1) * k).reshape(-1)
    token = torch.where(alive, toks[pair], torch.full_like(pair, PAD)).reshape(-1, 1)  # dead: [PAD]
    return src, token, pair.reshape(-1), alive.reshape(-1), counts, width


@dataclass(frozen=True)
class _FinalPairs:
    """The last step's legal ``(rows, toks)`` pairs: the item's log-probability, the complete path's,
    and the pair's ``user * n_items + item`` key."""

    rows: torch.Tensor
    toks: torch.Tensor
    lp: torch.Tensor
    path_lp: torch.Tensor
    key: torch.Tensor


def _rank_items(final: _FinalPairs, prob_sum, k: int, b: int, n_steps: int, gen: PathGenerationConfig, n_items: int,
                hist_lp, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Score every (beam, item) pair of the last step and keep the best path per (user, item):
    ``(item scores [B, n_items], best pair per user * n_items + item)``."""
    rows, key, path_lp = final.rows, final.key, final.path_lp
    if gen.ranking == "cumulative":
        crit = (prob_sum[rows] + final.lp.exp()) / n_steps
    else:
        crit = path_lp / (n_steps ** gen.length_penalty)
    best = torch.full((b * n_items,), NEG_INF, device=device).scatter_reduce(0, key, crit, "amax")
    best_pair = torch.zeros(b * n_items, dtype=torch.long, device=device)
    is_best = crit == best[key]
    best_pair[key[is_best]] = torch.arange(rows.shape[0], device=device)[is_best]  # ties: any best path
    if gen.ranking == "marginal":
        # item score = log of the total probability of the decoded paths that reach it (a
        # log-sum-exp over paths, stabilised by each item's best path); the explanation stays the
        # best path. An item reached by many probable paths outranks one reached by a lucky path.
        top = torch.full((b * n_items,), NEG_INF, device=device).scatter_reduce(0, key, path_lp, "amax")
        mass = torch.zeros(b * n_items, device=device).index_add_(0, key, (path_lp - top[key]).exp())
        best = torch.where(torch.isfinite(top), top + mass.clamp_min(1e-30).log(), top)
    best = best.view(b, n_items)
    if hist_lp is not None:  # product of experts over the decoded items (unreached stay -inf)
        best = best + gen.history_weight * hist_lp
    return best, best_pair


def _output(users, seqs, final: _FinalPairs, best, best_pair, exhaustive, want: _Wanted,
            constraint: GraphConstraint) -> BeamSearchOutput:
    """The top items (or the targets) of each user with their best paths (and candidates)."""
    b, n_items = best.shape
    n_found = torch.isfinite(best).sum(1)
    if want.targets is not None:  # the best decoded path of given items (-1: none), not the top items
        top_items = want.targets.clamp(min=0)
        top_scores = torch.where(want.targets >= 0, best.gather(1, top_items), NEG_INF)
    else:
        top_scores, top_items = torch.topk(best, min(want.n_return, n_items), dim=1)
    found = torch.isfinite(top_scores)
    rows, toks = final.rows, final.toks
    if rows.shape[0] == 0:
        return _empty_output(users, want.n_return, n_items, constraint.body_length, want.item_scores)
    pair = best_pair.view(b, n_items).gather(1, top_items)
    paths = torch.cat([seqs[rows[pair]][..., 1:], toks[pair].unsqueeze(-1)], dim=-1)  # drop [BOS]
    paths = torch.where(found.unsqueeze(-1), paths, torch.full_like(paths, PAD))
    out = BeamSearchOutput(users=users, items=torch.where(found, top_items, -1), scores=top_scores,
                           paths=paths, n_found=n_found, exhaustive=exhaustive,
                           item_scores=best if want.item_scores else None)
    if want.n_candidates > 1:
        out.candidate_paths, out.candidate_scores = _candidates(seqs, rows, toks, final.key, final.path_lp,
                                                                top_items, found, n_items, want.n_candidates)
    return out


def _candidates(seqs, rows, toks, key, path_lp, top_items, found, n_items: int, m: int):
    """The ``m`` most probable decoded paths of each returned (user, item): the final pairs sorted by
    (user-item key, log-prob descending), then a window of ``m`` from each target key's first pair."""
    b = top_items.shape[0]
    by_score = torch.argsort(path_lp, descending=True, stable=True)
    order = by_score[torch.argsort(key[by_score], stable=True)]
    sorted_keys = key[order]
    want = torch.arange(b, device=key.device).unsqueeze(1) * n_items + top_items  # [B, K]
    start = torch.searchsorted(sorted_keys, want)
    end = torch.searchsorted(sorted_keys, want, right=True)
    pos = start.unsqueeze(-1) + torch.arange(m, device=key.device)  # [B, K, m]
    valid = (pos < end.unsqueeze(-1)) & found.unsqueeze(-1)
    pair = order[pos.clamp(max=order.shape[0] - 1)]
    paths = torch.cat([seqs[rows[pair]][..., 1:], toks[pair].unsqueeze(-1)], dim=-1)
    paths = torch.where(valid.unsqueeze(-1), paths, torch.full_like(paths, PAD))
    return paths, torch.where(valid, path_lp[pair], NEG_INF)


@torch.inference_mode()
def path_log_probs(model, constraint: GraphConstraint, paths: torch.Tensor,
                   last_hop_norm: str = "legal") -> torch.Tensor:
    """Log-probability of complete paths ``[n, 2H+1]`` (``U r1 n1 ... nH``) under ``constraint``:
    the sum over steps of the model's next-token log-softmax renormalised over the legal tokens,
    exactly as the beam search scores a path. Lets a path found under a stricter constraint be
    scored on the same scale as the ranking."""
    paths = torch.as_tensor(paths, dtype=torch.long, device=constraint.device)
    n = paths.shape[0]
    seqs = torch.cat([torch.full((n, 1), BOS, dtype=torch.long, device=paths.device), paths], dim=1)
    total = torch.zeros(n, device=paths.device)
    if n == 0:
        return total
    head = sparse_head(model)
    if head is not None:
        hidden = head[0](seqs[:, :-1])  # [n, T-1, C]: the state before each generated token
    else:
        logits = model(seqs[:, :-1])[0]
    for t in range(1, seqs.shape[1] - 1):  # loop over path positions, not paths
        prefix, target = seqs[:, :t + 1], seqs[:, t + 1]
        if head is not None:
            rows, toks = constraint.allowed_pairs(prefix)
            logits = pair_logits(hidden[:, t], head[1], rows, toks)
            if t == seqs.shape[1] - 2 and last_hop_norm == "items":
                lp = item_normalised(hidden[:, t], head[1], constraint, rows, logits)
            else:
                lp = segment_log_softmax(logits, rows, n)
            hit = toks == target[rows]
            chosen = torch.full((n,), NEG_INF, device=paths.device).index_put_((rows[hit],), lp[hit])
        else:
            logp = masked_log_softmax(constraint(prefix, logits[:, t].float()))
            if t == seqs.shape[1] - 2 and last_hop_norm == "items":
                lo, hi = constraint.vocab.item_token_range
                logp = logits[:, t].float() - torch.logsumexp(logits[:, t, lo:hi].float(), -1, keepdim=True)
            chosen = logp.gather(1, target.unsqueeze(1)).squeeze(1)
        total = total + chosen
    return total


@torch.inference_mode()
def item_paths(model, constraint: GraphConstraint, users, items: torch.Tensor, generation: PathGenerationConfig,
               *, sparse: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The most probable decoded path from each user to each of its ``items [B, K]`` (``-1``: none).

    One beam search (``generation.num_beams`` wide, under ``constraint``, which may be stricter than
    the ranking's, e.g. knowledge-only) whose final step keeps, per (user, item), the best path.
    Returns ``paths [B, K, 2H+1]`` (``[PAD]`` where no beam reached the item) and their
    log-probabilities ``[B, K]`` (``-inf`` there). Used to pick explanations for a fixed ranking.
    """
    users = torch.as_tensor(users, dtype=torch.long, device=constraint.device).reshape(-1)
    items = torch.as_tensor(items, dtype=torch.long, device=constraint.device)
    want = _Wanted(n_return=max(int(items.shape[1]), 1), targets=items)
    out = _search(model, constraint, users, generation.replace(ranking="logprob"), want,
                  num_beams=generation.num_beams, sparse=sparse)
    return out.paths, out.scores


@torch.inference_mode()
def beam_search(model, constraint: GraphConstraint, users, generation: PathGenerationConfig, *, n_return: int,
                return_item_scores: bool = False, generator: torch.Generator | None = None,
                sparse: bool = True, n_candidates: int = 1) -> BeamSearchOutput:
    """Constrained beam search for a batch of users; ``n_return`` distinct unseen items each.

    Args:
        model: ``forward(input_ids, past_key_values=None, use_cache=False) -> (logits, cache)``.
        constraint: the :class:`GraphConstraint` (its device is used for everything).
        users: user indices (0-based).
        generation: the decoding settings (beams, sampling, ranking: ``logprob`` = best path's
            log-probability, ``marginal`` = log of the summed probability of the decoded paths
            reaching the item, ``cumulative`` = hopwise's mean token probability).
        n_return: distinct items to return per user.
        return_item_scores: also return the ``[B, n_items]`` item score matrix.
        sparse: score only legal tokens through the model's ``hidden_states``/``output_embeddings``
            when it has them (same results as the dense ``LogitsProcessor`` path, much less work);
            sampling always uses the dense path (its top-k/top-p warpers are dense).
        n_candidates: also return the ``n_candidates`` most probable decoded paths of each returned
            item (explanation post-processing picks among them).
    """
    if n_return < 1:
        raise ValueError(f"n_return must be >= 1, got {n_return}")
    if generation.path_hop_length != constraint.hop_length:
        raise ValueError(f"generation.path_hop_length={generation.path_hop_length} differs from the "
                         f"constraint's hop_length={constraint.hop_length}")
    n_pos = getattr(getattr(model, "config", None), "n_positions", None)
    if n_pos is not None and n_pos < constraint.body_length + 1:
        raise ValueError(f"model n_positions={n_pos} is too short for hop_length={constraint.hop_length} "
                         f"(needs {constraint.body_length + 1})")
    users = torch.as_tensor(users, dtype=torch.long, device=constraint.device).reshape(-1)
    if users.numel() and (users.min() < 0 or users.max() >= constraint.graph.n_users):
        raise ValueError(f"user index out of range [0, {constraint.graph.n_users})")
    want = _Wanted(n_return=n_return, item_scores=return_item_scores, n_candidates=n_candidates)
    args = dict(generator=generator, sparse=sparse)
    out = _search(model, constraint, users, generation, want, num_beams=generation.num_beams, **args)
    cap = generation.max_num_beams or max(64 * generation.num_beams, 1024)
    widened, beams = 0, generation.num_beams
    short = (out.n_found < min(n_return, constraint.graph.n_items)) & ~out.exhaustive
    while bool(short.any()) and beams < cap:
        beams = min(4 * beams, cap)
        idx = short.nonzero().squeeze(1)
        sub = _search(model, constraint, users[idx], generation, want, num_beams=beams, **args)
        widened += idx.numel()
        for name in ("items", "scores", "paths", "n_found", "exhaustive", "item_scores", "candidate_paths",
                     "candidate_scores"):
            full = getattr(out, name)
            if full is not None:
                full[idx] = getattr(sub, name)
        short = (out.n_found < min(n_return, constraint.graph.n_items)) & ~out.exhaustive
    if bool(short.any()):
        logger.warning("%d users have fewer than %d items after widening to %d beams",
                    int(short.sum()), n_return, beams)
    out.stats = {"widened_users": widened, "max_beams_used": beams}
    return out
