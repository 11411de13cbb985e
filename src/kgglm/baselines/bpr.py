"""BPR: matrix factorisation trained with the Bayesian personalised ranking loss (Rendle et al., 2009).

Follows RecBole's ``BPR``: xavier-normal initialised user and item embeddings, score = dot
product, loss ``-log sigmoid(s(u, i+) - s(u, i-))`` with one uniformly sampled unseen negative per
training pair, Adam, no regularisation term (``weight_decay`` 0 by default).
"""

from __future__ import annotations

import numpy as np
import torch

from kgglm.baselines.base import TorchRecommender, bpr_loss, xavier_embedding


class BPR(TorchRecommender):
    """Matrix factorisation with the BPR loss (see module docstring)."""

    name = "BPR"

    def build(self, dataset) -> None:
        dim = self.settings.embedding_size
        self.user_embedding = xavier_embedding(dataset.n_users, dim, normal=True)
        self.item_embedding = xavier_embedding(dataset.n_items, dim, normal=True)

    def calculate_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        u = self.user_embedding(users)
        pos_scores = (u * self.item_embedding(pos)).sum(-1)
        neg_scores = (u * self.item_embedding(neg)).sum(-1)
        return bpr_loss(pos_scores, neg_scores)

    @torch.no_grad()
    def score_items(self, users: np.ndarray) -> np.ndarray:
        device = self.user_embedding.weight.device
        u = self.user_embedding(torch.as_tensor(np.asarray(users, np.int64), device=device))
        return (u @ self.item_embedding.weight.T).float().cpu().numpy()
