"""EASE (Steck, WWW 2019): a closed-form item-item linear autoencoder.

With ``X`` the binary training matrix, ``G = X^T X + lambda I`` and ``P = G^-1``, the weights are
``B = -P / diag(P)`` (each column ``j`` divided by ``P[j, j]``) with ``diag(B) = 0``: the ridge
regression of every item column of ``X`` on the other columns, constrained to a zero diagonal.
Scores are ``X B``. ``lambda`` is the config key ``reg_weight``; with ``reg_weight_grid`` it is chosen
on valid among the grid values (see :class:`~kgglm.baselines.itemitem.ItemItemRecommender`).
The inverse is a dense ``n_items x n_items`` float64 matrix (ML1M: 3,706 items, 110 MB).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from kgglm.baselines.itemitem import ItemItemRecommender, gram_matrix


def ease_weights(gram: np.ndarray, reg_weight: float) -> np.ndarray:
    """EASE's ``B`` for the Gram matrix ``X^T X`` and ``lambda = reg_weight`` (zero diagonal)."""
    if reg_weight <= 0:
        raise ValueError(f"EASE: reg_weight (lambda) must be positive, got {reg_weight}")
    g = gram.copy()
    g[np.diag_indices_from(g)] += float(reg_weight)
    p = np.linalg.inv(g)
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


class EASE(ItemItemRecommender):
    """EASE item-item weights in closed form; ``lambda`` (``reg_weight``) chosen on valid from ``reg_weight_grid``."""

    name = "EASE"
    grid_key = "reg_weight_grid"
    value_name = "reg_weight"

    def prepare(self, x: sp.csr_matrix) -> None:
        self.gram = gram_matrix(x)

    def weights_for(self, value: float) -> np.ndarray:
        return ease_weights(self.gram, float(value))
