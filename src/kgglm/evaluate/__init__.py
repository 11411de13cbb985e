"""Evaluation: the one judge of ranked lists (:func:`evaluate`), top-k metrics, path quality.

Rankers (the path decoder, the baselines' scorer ranker) produce :class:`Recommendations`;
:func:`kgglm.tasks.ranking.evaluate_model` wires a model's ranker to :func:`evaluate`.
"""

from kgglm.evaluate.evaluator import EvalConfig, Evaluation, evaluate, evaluate_topk, path_quality, rank_scores
from kgglm.evaluate.metrics import METRICS, metric_value, topk_metrics
from kgglm.evaluate.ranked import Recommendations

__all__ = ["METRICS", "EvalConfig", "Evaluation", "Recommendations", "evaluate", "evaluate_topk", "metric_value",
           "path_quality", "rank_scores", "topk_metrics"]
