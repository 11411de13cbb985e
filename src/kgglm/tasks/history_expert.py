"""The history expert's stage of fine-tuning: fit it, then weigh it against the paths on valid.

:func:`fit_expert` trains the Mult-DAE expert (:mod:`kgglm.model.expert`) before the path model is
fine-tuned, choosing its epoch by its own valid ranking over all items (the one evaluator, through
the scorers' ranker). :func:`choose_history_weight` then picks ``history_weight`` (the expert's
weight in the decoded items' scores) from ``history_expert_args.weight_grid`` on valid, with the
fine-tuned path model: how much of the whole-history evidence to trust is learned on valid, not
fixed. Test is decoded once, with the chosen weight.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from kgglm.baselines.base import make_evaluate_fn
from kgglm.data import Dataset
from kgglm.decode.generation import PathGenerationConfig
from kgglm.evaluate.evaluator import EvalConfig
from kgglm.paths.vocab import Vocabulary
from kgglm.tasks.ranking import evaluate_model
from kgglm.train.expert import ExpertFitConfig, ExpertFitResult, fit_history_expert

logger = logging.getLogger(__name__)


class ExpertScorer:
    """The expert alone as a scorer (``score_items``): log p(item | the user's training history)."""

    name = "history expert"

    def __init__(self, model, vocab: Vocabulary) -> None:
        self.model, self.offset = model, vocab.node_offset

    def score_items(self, users: np.ndarray) -> np.ndarray:
        device = self.model.expert.dec.weight.device
        tokens = torch.as_tensor(np.asarray(users, dtype=np.int64) + self.offset, device=device)
        with torch.inference_mode():
            return self.model.history_log_probs(tokens).cpu().numpy()


def fit_expert(model, data: Dataset, vocab: Vocabulary, schedule: ExpertFitConfig,
               settings: EvalConfig) -> ExpertFitResult | None:
    """Train the model's history expert (none: ``None``), its epoch chosen on valid."""
    if getattr(model, "expert", None) is None:
        return None
    scorer, valid = ExpertScorer(model, vocab), make_evaluate_fn(data, settings, "valid")
    users = torch.arange(data.n_users, dtype=torch.long) + vocab.node_offset
    was_training = model.training
    result = fit_history_expert(model, users, schedule,
                                evaluate_fn=lambda m: valid(scorer)[0])
    model.train(was_training)
    model.expert.eval()  # its dropout is its own: off whenever the path model trains (train() sets it)
    logger.info("history expert: epoch %d chosen (valid %s) in %.1f s", result.best_epoch,
                f"{result.best_score:.4f}" if result.best_score is not None else "n/a", result.seconds)
    return result


def choose_history_weight(model, data: Dataset, vocab: Vocabulary, weight_grid: Sequence[float],
                          settings: EvalConfig, generation: PathGenerationConfig, current_score: float | None,
                          current_metrics: dict | None) -> tuple[PathGenerationConfig, float | None, dict | None]:
    """``(generation, valid score, valid metrics)`` with the ``history_weight`` of
    ``history_expert_args.weight_grid`` that scores best on valid. ``current_score``/``current_metrics``:
    valid of ``generation``'s own weight, already known (a tie keeps the earlier weight). An empty
    grid keeps ``generation``."""
    grid = [float(w) for w in weight_grid]
    best_w, best, metrics = generation.history_weight, current_score, current_metrics
    for w in grid:
        if w == generation.history_weight and current_score is not None:
            continue
        ev = evaluate_model(model, data, "valid", settings, vocab=vocab,
                            generation=generation.replace(history_weight=w))
        logger.info("history_weight %g: valid %s %.4f", w, settings.valid_metric, ev.score)
        if best is None or ev.score > best:
            best_w, best, metrics = w, ev.score, ev.metrics
    logger.info("history_weight %g chosen on valid (%s)", best_w, f"{best:.4f}" if best is not None else "n/a")
    return generation.replace(history_weight=best_w), best, metrics
