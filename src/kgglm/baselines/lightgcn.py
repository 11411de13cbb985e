"""LightGCN (He et al., SIGIR 2020): linear propagation of embeddings over the user-item graph.

Follows RecBole's ``LightGCN``: xavier-uniform ego embeddings, ``n_layers`` propagations with the
symmetric normalised adjacency ``D^-1/2 A D^-1/2`` of the bipartite *training* graph, final
embedding = mean of the ego and every layer's embedding, score = dot product, BPR loss plus
``reg_weight`` times RecBole's ``EmbLoss`` on the batch's ego embeddings (the sum of their L2
norms, not squared, divided by the batch size: RecBole's default ``require_pow: false``).

The adjacency is a torch sparse tensor, so memory grows with the number of interactions.
"""

from __future__ import annotations

import numpy as np
import torch

from kgglm.baselines.base import TorchRecommender, bpr_loss, xavier_embedding


def normalized_adjacency(n_users: int, n_items: int, users: np.ndarray, items: np.ndarray) -> torch.Tensor:
    """``D^-1/2 A D^-1/2`` of the user-item graph as a coalesced sparse ``[n, n]`` tensor.

    Nodes are users ``0..n_users-1`` then items ``n_users..``; ``A`` has a 1 for each distinct
    (user, item) pair in both directions; ``D`` is its row sum (isolated nodes get an empty row).
    """
    keys = np.unique(np.asarray(users, np.int64) * n_items + np.asarray(items, np.int64))
    u, i = keys // n_items, keys % n_items + n_users
    rows, cols = np.concatenate([u, i]), np.concatenate([i, u])
    n = n_users + n_items
    degree = np.bincount(rows, minlength=n).astype(np.float64)
    inv_sqrt = np.zeros(n)
    np.divide(1.0, np.sqrt(degree), out=inv_sqrt, where=degree > 0)
    values = inv_sqrt[rows] * inv_sqrt[cols]
    index = torch.as_tensor(np.stack([rows, cols]))
    return torch.sparse_coo_tensor(index, torch.as_tensor(values, dtype=torch.float32), (n, n),
                                   check_invariants=True).coalesce()


class LightGCN(TorchRecommender):
    """LightGCN with the BPR loss (see module docstring); config keys ``n_layers``, ``reg_weight``."""

    name = "LightGCN"

    def build(self, dataset) -> None:
        dim = self.settings.embedding_size
        self.n_users, self.n_items = dataset.n_users, dataset.n_items
        self.n_layers = self.settings.n_layers
        self.reg_weight = self.settings.reg_weight
        self.user_embedding = xavier_embedding(self.n_users, dim, normal=False)
        self.item_embedding = xavier_embedding(self.n_items, dim, normal=False)
        train = dataset.splits["train"]
        self.register_buffer("adjacency", normalized_adjacency(self.n_users, self.n_items, train.users,
                                                               train.items), persistent=False)
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def invalidate_cache(self) -> None:
        self._cache = None

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (user, item) embeddings: the mean of the ego embeddings and every layer's output."""
        x = torch.cat([self.user_embedding.weight, self.item_embedding.weight])
        total = x
        for _ in range(self.n_layers):
            x = torch.sparse.mm(self.adjacency, x)
            total = total + x
        final = total / (self.n_layers + 1)
        return final[:self.n_users], final[self.n_users:]

    def calculate_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        user_all, item_all = self.propagate()  # full propagation per batch, as in RecBole
        u = user_all[users]
        loss = bpr_loss((u * item_all[pos]).sum(-1), (u * item_all[neg]).sum(-1))
        ego = (self.user_embedding(users), self.item_embedding(pos), self.item_embedding(neg))
        reg = sum(torch.linalg.vector_norm(e) for e in ego) / len(users)
        return loss + self.reg_weight * reg

    @torch.no_grad()
    def score_items(self, users: np.ndarray) -> np.ndarray:
        if self._cache is None:  # propagate once per parameter state, not once per user batch
            self._cache = self.propagate()
        user_all, item_all = self._cache
        u = user_all[torch.as_tensor(np.asarray(users, np.int64), device=user_all.device)]
        return (u @ item_all.T).float().cpu().numpy()
