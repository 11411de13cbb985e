"""Next-token log-probabilities of the constrained decoder over the legal ``(row, token)`` pairs.

The beam search and :func:`~kgglm.decode.beam_search.path_log_probs` score a step the same way:
with a model that exposes its hidden states and output embeddings (:func:`sparse_head`), only the
legal tokens of each row (:func:`pair_logits`, then :func:`segment_log_softmax` within each row);
otherwise through ``forward`` and the constraint's dense ``LogitsProcessor`` mask
(:func:`dense_pairs`, with the sampling warpers). :func:`item_normalised` normalises the last hop
over all items (``last_hop_norm='items'``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kgglm.decode.constraints import NEG_INF


def filter_top_k_top_p(logp: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Sampling warpers on per-row log-probabilities (as transformers' TopK/TopP warpers)."""
    if top_k and top_k > 0:
        k = min(top_k, logp.shape[-1])
        kth = torch.topk(logp, k, dim=-1).values[..., -1:]
        logp = logp.masked_fill(logp < kth, NEG_INF)
    if top_p < 1.0:
        sorted_lp, order = torch.sort(logp, dim=-1, descending=True)
        cum = torch.cumsum(sorted_lp.exp(), dim=-1)
        remove = (cum - sorted_lp.exp()) > top_p  # keep the smallest prefix whose mass reaches top_p
        remove[..., 0] = False
        logp = logp.masked_fill(torch.zeros_like(remove).scatter(-1, order, remove), NEG_INF)
    return logp


def masked_log_softmax(scores: torch.Tensor) -> torch.Tensor:
    """log_softmax over legal tokens; rows with no legal token stay all ``-inf`` (not NaN)."""
    logp = F.log_softmax(scores, dim=-1)
    return torch.where(torch.isfinite(scores), logp, torch.full_like(logp, NEG_INF))


def sparse_head(model):
    """``(hidden_states, output_weight)`` for a model that exposes them (KGGLM), else ``None``.

    With them the search scores only the legal tokens of each row (a few per row instead of the
    whole vocabulary); other models go through ``forward`` and the dense ``LogitsProcessor`` mask.
    A model opts in by defining ``hidden_states(ids, cache)``, ``output_embeddings()`` and
    ``new_cache(batch, capacity)``.
    """
    if all(callable(getattr(model, name, None)) for name in ("hidden_states", "output_embeddings", "new_cache")):
        return model.hidden_states, model.output_embeddings()
    return None


def pair_logits(h: torch.Tensor, w: torch.Tensor, rows: torch.Tensor, toks: torch.Tensor, *,
                 block: int = 1 << 18, chunk: int = 1 << 15) -> torch.Tensor:
    """``logits[p] = h[rows[p]] . w[toks[p]]`` for the legal pairs only (``rows`` ascending).

    A matmul of the rows against the embeddings of the distinct tokens involved, then a gather,
    is far cheaper per logit than per-pair dot products (a dense GEMM against gathered vectors),
    so it is used whenever it computes at most 64x more logits than there are pairs. It runs over
    blocks of rows whose ``[rows, distinct tokens]`` product stays within ``block`` floats (cache-
    sized, and memory bounded however many tokens the graph has). Otherwise, per-pair dot
    products in fixed-size chunks. The distinct tokens are found with a vocabulary-sized presence
    mask (one ``O(V + pairs)`` pass) instead of sorting the pairs.
    """
    present = torch.zeros(w.shape[0], dtype=torch.bool, device=h.device)
    present[toks] = True
    uniq = present.nonzero().squeeze(1)
    n_rows, n_uniq = h.shape[0], uniq.shape[0]
    out = torch.empty(rows.shape[0], device=h.device, dtype=torch.float32)
    if n_rows * n_uniq <= 64 * rows.shape[0]:
        inv = (torch.cumsum(present, 0) - 1)[toks]  # position of each pair's token among the distinct ones
        w_t, hf = w[uniq].float().T, h.float()
        step = max(1, block // max(n_uniq, 1))
        bounds = torch.searchsorted(rows, torch.arange(0, n_rows + step, step, device=h.device)).tolist()
        for i, r0 in enumerate(range(0, n_rows, step)):  # loop over memory blocks, not rows or users
            p0, p1 = bounds[i], bounds[i + 1]
            if p1 > p0:
                out[p0:p1] = (hf[r0:r0 + step] @ w_t).view(-1)[(rows[p0:p1] - r0) * n_uniq + inv[p0:p1]]
        return out
    for s in range(0, rows.shape[0], chunk):  # loop over memory chunks, not rows or users
        e = s + chunk
        out[s:e] = (h[rows[s:e]].float() * w[toks[s:e]].float()).sum(-1)
    return out


def segment_log_softmax(x: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """log_softmax of ``x`` within each row's group of pairs."""
    m = torch.full((n_rows,), NEG_INF, device=x.device).scatter_reduce(0, rows, x, "amax")
    shifted = x - m[rows]
    z = torch.zeros(n_rows, device=x.device).index_add_(0, rows, shifted.exp())
    return shifted - z.log()[rows]


def dense_pairs(constraint, seqs, last, do_sample, temperature, top_k, top_p, items_norm: bool = False):
    """Legal pairs, their log-probs and (sampling) warped log-probs via the ``LogitsProcessor``."""
    scores = constraint(seqs, last.float())
    logp = masked_log_softmax(scores)
    rows, toks = torch.isfinite(logp).nonzero(as_tuple=True)
    lp = logp[rows, toks]
    if items_norm:  # the last item over all items (see item_normalised)
        lo, hi = constraint.vocab.item_token_range
        lp = last.float()[rows, toks] - torch.logsumexp(last.float()[:, lo:hi], -1)[rows]
    warped = None
    if do_sample:
        w = filter_top_k_top_p(masked_log_softmax(scores / temperature), top_k, top_p)
        warped = w[rows, toks]
    return rows, toks, lp, warped


def item_normalised(state: torch.Tensor, w: torch.Tensor, constraint, rows: torch.Tensor,
                     logits: torch.Tensor) -> torch.Tensor:
    """Log-probability of the last (item) token normalised over *all* items, the distribution
    training fits (typed output), instead of over each beam's unseen legal items.

    Every training path ends on one of the user's training items, so the model puts most of the
    last hop's mass on items that are masked at test time; renormalising the small remainder per
    beam gives an item probability near 1 whenever a beam has a single unseen continuation, and
    wider searches then surface many such beams. Over all items, scores compare across beams."""
    lo, hi = constraint.vocab.item_token_range
    w_items = w[lo:hi].float()
    return logits - torch.logsumexp(state.float() @ w_items.T, dim=-1)[rows]
