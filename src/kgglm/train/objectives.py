"""Training objectives other than the path corpus's next-token loss, for ``train(objective=...)``.

An objective is ``objective(model, rows) -> loss``: the mean loss over a batch of corpus rows
(:data:`kgglm.train.trainer.Objective`).
"""

from __future__ import annotations

import numpy as np
import torch

from kgglm.evaluate.kg_ranking import candidate_offset, tail_logits
from kgglm.model.gpt import KGGLM
from kgglm.paths.vocab import Vocabulary

__all__ = ["TailSetLoss"]


class TailSetLoss:
    """The 1-N fine-tuning loss: rows are the distinct prompts ``[BOS] h r`` of the train triple
    paths (:attr:`prompts`), and a row's loss is ``-sum_t log p(t | [BOS] h r)`` over all of its train
    tails ``t`` (the softmax over item and entity tokens, the candidates
    :class:`~kgglm.evaluate.kg_ranking.TailScorer` ranks).

    Summed, not averaged, over a prompt's tails: the loss is then exactly the tail tokens' share of
    the path corpus's loss (every triple weighs the same, as in the per-triple metrics), computed
    with one forward pass per prompt instead of one per triple; the batch loss is the mean over
    rows, as the trainer expects. This is the 1-N / "KvsAll" scoring of KG-embedding training
    (ConvE, TuckER) with the language model as the scorer. Tails are found from the rows
    themselves (sorted ``head token * V + relation token`` keys), so any batch of prompt rows works.
    Built from the triple paths of :func:`kgglm.tasks.kg_completion.triple_corpus` (``[BOS] h r t
    [EOS]`` rows).
    """

    def __init__(self, paths: np.ndarray, vocab: Vocabulary) -> None:
        keys = paths[:, 1] * vocab.size + paths[:, 2]
        order = np.lexsort((paths[:, 3], keys))
        keys, first, count = np.unique(keys[order], return_index=True, return_counts=True)
        self.n_triples = len(paths)
        self.prompts = paths[order[first], :3]
        self.lo = candidate_offset(vocab)
        self.vocab_size = vocab.size
        self.keys = torch.from_numpy(keys)
        self.indptr = torch.from_numpy(np.concatenate([[0], np.cumsum(count)]))
        self.tails = torch.from_numpy(paths[order, 3] - self.lo)

    def __call__(self, model: KGGLM, x: torch.Tensor) -> torch.Tensor:
        if self.keys.device != x.device:
            self.keys, self.indptr, self.tails = (v.to(x.device) for v in (self.keys, self.indptr, self.tails))
        q = torch.searchsorted(self.keys, x[:, 1] * self.vocab_size + x[:, 2])
        start, count = self.indptr[q], self.indptr[q + 1] - self.indptr[q]
        rows = torch.repeat_interleave(torch.arange(len(q), device=x.device), count)
        # position of each (row, i-th tail) pair in self.tails: start[row] + i
        pos = torch.repeat_interleave(start - torch.cumsum(count, 0) + count, count)
        pos = pos + torch.arange(len(pos), device=x.device)
        logits = tail_logits(model, x, self.lo)
        log_p = logits[rows, self.tails[pos]] - torch.logsumexp(logits, dim=-1)[rows]
        return -log_p.sum() / x.shape[0]
