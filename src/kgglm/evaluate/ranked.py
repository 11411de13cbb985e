"""Ranked lists, what every ranker produces and :func:`kgglm.evaluate.evaluate` judges.

The path decoder (:func:`kgglm.decode.recommend.recommend`) and the scorer ranker of the baselines
(:func:`kgglm.baselines.base.rank_scorer`) both return :class:`Recommendations`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
    path_scores: np.ndarray | None = None  # [n, K] log-probability of each shown path (None: = scores)

    @property
    def topk(self) -> int:
        return int(self.items.shape[1])

    @property
    def hop_length(self) -> int:
        return (int(self.paths.shape[2]) - 1) // 2
