"""Evaluation: top-k metrics, full-ranking evaluation, path quality and the Pop baseline."""

from kgglm.evaluate.evaluator import PopBaseline, evaluate_model, evaluate_topk, path_quality, rank_scores
from kgglm.evaluate.metrics import METRICS, metric_value, topk_metrics

__all__ = ["METRICS", "PopBaseline", "evaluate_model", "evaluate_topk", "metric_value", "path_quality",
           "rank_scores", "topk_metrics"]
