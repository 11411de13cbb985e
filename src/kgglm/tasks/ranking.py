"""Ranker and evaluator wired: the lists of any model on a split, judged by the one evaluator.

:func:`rank` asks the model's ranker for the lists (the constrained path decoder for KGGLM,
:func:`kgglm.baselines.base.rank_scorer` for anything with ``score_items``), spread over the ranks
under torchrun; :func:`evaluate_model` hands them to :func:`kgglm.evaluate.evaluate`.
"""

from __future__ import annotations

import numpy as np

from kgglm import distributed
from kgglm.baselines.base import rank_scorer
from kgglm.decode.generation import PathGenerationConfig
from kgglm.decode.recommend import recommend
from kgglm.evaluate.evaluator import EvalConfig, Evaluation, evaluate
from kgglm.evaluate.ranked import Recommendations
from kgglm.paths.vocab import Vocabulary


def is_scorer(model) -> bool:
    """A model that scores all items (the baseline interface) rather than decoding paths."""
    return callable(getattr(model, "score_items", None))


def rank(model, dataset, split: str, settings: EvalConfig, *, vocab: Vocabulary | None = None,
         generation: PathGenerationConfig | None = None, users: np.ndarray | None = None,
         show_progress: bool = False) -> tuple[Recommendations, float]:
    """``(lists, seconds)``: ``max(topk)`` unseen items per user of ``split`` (or of ``users``), with
    their paths for path decoders, and the wall time the ranking took.

    ``vocab`` and ``generation`` are needed for path decoders only. Valid and test are ranked with
    the same settings; an export that wants more items per user decodes separately.
    """
    users = dataset.eval_users(split) if users is None else np.asarray(users, dtype=np.int64)
    k, batch = settings.max_k, settings.eval_batch_size
    if is_scorer(model):
        def rank_fn(part: np.ndarray) -> Recommendations:
            return rank_scorer(model, dataset, part, split, k, batch)
    else:
        if vocab is None or generation is None:
            raise ValueError("evaluate: a path decoder needs vocab and generation settings")

        def rank_fn(part: np.ndarray) -> Recommendations:
            return recommend(model, dataset, part, vocab=vocab, generation=generation, n_return=k, split=split,
                             batch_size=batch, show_progress=show_progress and distributed.is_main())
    return distributed.rank_in_shards(rank_fn, users, batch)


def evaluate_model(model, dataset, split: str, settings: EvalConfig, *, vocab: Vocabulary | None = None,
                   generation: PathGenerationConfig | None = None, users: np.ndarray | None = None,
                   show_progress: bool = False) -> Evaluation:
    """:func:`rank` the users of ``split`` (or ``users``) and judge the lists with
    :func:`kgglm.evaluate.evaluate`: the metrics and the lists they were computed from."""
    recs, seconds = rank(model, dataset, split, settings, vocab=vocab, generation=generation, users=users,
                         show_progress=show_progress)
    return evaluate(recs, dataset, settings, vocab=vocab, seconds=seconds,
                    label=getattr(model, "name", type(model).__name__))
