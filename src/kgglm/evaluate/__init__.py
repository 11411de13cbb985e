"""Evaluation: one full-ranking path for every model (:func:`evaluate`), top-k metrics, path quality."""

from kgglm.evaluate.evaluator import EvalConfig, Evaluation, evaluate, evaluate_topk, path_quality, rank_scores
from kgglm.evaluate.metrics import METRICS, metric_value, topk_metrics

__all__ = ["METRICS", "EvalConfig", "Evaluation", "evaluate", "evaluate_topk", "metric_value", "path_quality",
           "rank_scores", "topk_metrics"]
