"""The history expert: a multinomial denoising autoencoder over a user's training items.

A user path sees the user token and one watched item; a strong collaborative model sees every item
the user watched. The expert is that model inside KGGLM: Mult-DAE (Liang et al., "Variational
Autoencoders for Collaborative Filtering", WWW 2018), the user's items (with dropout while training)
-> one ``tanh`` layer -> a softmax over all items. It reads the history only, never a free user
embedding, so it cannot memorise a user's training items, and it is trained on its own
(:func:`kgglm.train.expert.fit_history_expert`) because its objective (all of a user's items at
once) is not the path model's. Decoding adds ``history_weight * log p(item | history)`` to the
score of each *decoded* item (a product of experts): the ranking uses the whole history, while
every recommendation keeps the graph path that explains it.

Memory grows with the interactions: the encoder is an ``EmbeddingBag`` over the history entries,
not a dense users x items matrix.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class HistoryExpert(nn.Module):
    """Mult-DAE with one hidden layer: ``log_softmax(W2 tanh(W1 x / sqrt(|x|) + b1) + b2)``."""

    def __init__(self, n_items: int, dim: int, dropout: float) -> None:
        super().__init__()
        if n_items <= 0 or dim <= 0:
            raise ValueError(f"HistoryExpert needs n_items > 0 and dim > 0, got {n_items}, {dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"history expert dropout must be in [0, 1), got {dropout}")
        self.n_items, self.dropout = n_items, dropout
        self.enc = nn.EmbeddingBag(n_items, dim, mode="sum")
        self.enc_bias = nn.Parameter(torch.zeros(dim))
        self.dec = nn.Linear(dim, n_items)
        self.reset_parameters()
        # frozen but inside its own fit: the path model's optimiser and DDP (which would wait for
        # gradients the path loss never gives it) leave it alone
        self.requires_grad_(False)

    def reset_parameters(self) -> None:
        """Xavier weights and zero biases, as Mult-DAE (the GPT's N(0, 0.02) suits it less)."""
        nn.init.xavier_uniform_(self.enc.weight)
        nn.init.xavier_uniform_(self.dec.weight)
        nn.init.zeros_(self.enc_bias)
        nn.init.zeros_(self.dec.bias)

    def forward(self, n_rows: int, row: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Item logits ``[n_rows, n_items]`` from history entries ``(row, item)``, grouped by row in
        increasing order (``item`` in ``[0, n_items)``). In training mode each entry is dropped with
        probability ``dropout`` (the survivors scaled by ``1 / (1 - dropout)``, as ``nn.Dropout``);
        the input is then divided by the square root of its sum (Mult-DAE's L2 normalisation of a
        binary vector)."""
        weight = torch.ones(items.shape, device=items.device, dtype=self.enc.weight.dtype)
        if self.training and self.dropout > 0:
            weight = F.dropout(weight, self.dropout, training=True)
        counts = torch.bincount(row, minlength=n_rows)
        norm = torch.zeros(n_rows, device=items.device, dtype=weight.dtype).index_add_(0, row, weight)
        weight = weight / norm.clamp_min(1.0).sqrt()[row]
        offsets = torch.cumsum(counts, 0) - counts
        hidden = torch.tanh(self.enc(items, offsets, per_sample_weights=weight) + self.enc_bias)
        return self.dec(hidden)

    def log_probs(self, n_rows: int, row: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``[n_rows, n_items]`` float32 log-probabilities of every item."""
        return torch.log_softmax(self(n_rows, row, items).float(), dim=-1)

    def loss(self, n_rows: int, row: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Mult-DAE's objective: the mean over rows of the summed negative log-likelihood of all the
        row's history items (the dropped ones included: the expert learns to fill them in)."""
        logp = self.log_probs(n_rows, row, items)
        return -logp[row, items].sum() / max(int(torch.unique(row).numel()), 1)
