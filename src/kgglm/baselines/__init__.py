"""Collaborative-filtering and knowledge-graph baselines with one interface (:class:`Recommender`).

``get_baseline('BPR')()`` builds a model; ``model.fit(dataset, settings, evaluate_fn=...)`` (a
:class:`BaselineSettings`, resolved by :func:`kgglm.settings.resolve`) trains it
on the training split and ``model.score_items(users)`` scores every item for a batch of users.
"""

from __future__ import annotations

from kgglm.baselines.base import (
    BaselineSettings,
    EarlyStopping,
    Recommender,
    TorchRecommender,
    make_evaluate_fn,
)
from kgglm.baselines.bpr import BPR
from kgglm.baselines.ease import EASE
from kgglm.baselines.itemknn import ItemKNN
from kgglm.baselines.kgitemknn import KGItemKNN
from kgglm.baselines.lightgcn import LightGCN
from kgglm.baselines.pop import Pop

BASELINES: dict[str, type[Recommender]] = {cls.name: cls for cls in (Pop, BPR, LightGCN, EASE, ItemKNN,
                                                                      KGItemKNN)}


def get_baseline(name: str) -> type[Recommender]:
    """The baseline class called ``name`` (case-insensitive): Pop, BPR, LightGCN, EASE, ItemKNN or KGItemKNN."""
    by_lower = {key.lower(): cls for key, cls in BASELINES.items()}
    try:
        return by_lower[str(name).lower()]
    except KeyError:
        raise KeyError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}") from None


__all__ = ["BASELINES", "BPR", "BaselineSettings", "EASE", "EarlyStopping", "ItemKNN", "KGItemKNN", "LightGCN", "Pop",
           "Recommender", "TorchRecommender", "get_baseline", "make_evaluate_fn"]
