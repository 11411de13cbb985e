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

from kgglm import distributed
from kgglm.baselines.base import make_evaluate_fn
from kgglm.data import Dataset
from kgglm.decode.generation import PathGenerationConfig
from kgglm.decode.recommend import recommend
from kgglm.evaluate.evaluator import EvalConfig, evaluate
from kgglm.evaluate.ranked import Recommendations
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
    model.train(was_training)  # (KGGLM.train leaves the expert in eval mode)
    logger.info("history expert: epoch %d chosen (valid %s) in %.1f s", result.best_epoch,
                f"{result.best_score:.4f}" if result.best_score is not None else "n/a", result.seconds)
    return result


def choose_history_weight(model, data: Dataset, vocab: Vocabulary, weight_grid: Sequence[float],
                          settings: EvalConfig, generation: PathGenerationConfig, current_score: float | None,
                          current_metrics: dict | None) -> tuple[PathGenerationConfig, float | None, dict | None]:
    """``(generation, valid score, valid metrics)`` with the ``history_weight`` of
    ``history_expert_args.weight_grid`` that scores best on valid. ``current_score``/``current_metrics``:
    valid of ``generation``'s own weight, already known (a tie keeps the earlier weight). An empty
    grid keeps ``generation``.

    The weight only re-ranks the decoded items (the beams never see it), so valid is decoded once and
    every weight's lists come from :func:`weighted_lists`; the chosen weight is then decoded once more
    for its full valid metrics (its explanations' quality with them).
    """
    grid = [float(w) for w in weight_grid]
    best_w, best, metrics = generation.history_weight, current_score, current_metrics
    if not grid:
        return generation, best, metrics
    for w, recs in zip(grid, weighted_lists(model, data, vocab, settings, generation, grid)):
        score = evaluate(recs, data, settings, label=f"history_weight {w:g}").score
        if best is None or score > best:
            best_w, best, metrics = w, score, None
    if metrics is None or best_w != generation.history_weight:
        ev = evaluate_model(model, data, "valid", settings, vocab=vocab,
                            generation=generation.replace(history_weight=best_w))
        best, metrics = ev.score, ev.metrics
    logger.info("history_weight %g chosen on valid (%s)", best_w, f"{best:.4f}" if best is not None else "n/a")
    return generation.replace(history_weight=best_w), best, metrics


def weighted_lists(model, data: Dataset, vocab: Vocabulary, settings: EvalConfig, generation: PathGenerationConfig,
                   weights: list[float], split: str = "valid") -> list[Recommendations]:
    """The ranked lists (items only) of ``split`` under each of ``weights`` from one decode: the
    decoded items' path scores plus ``w`` times the expert's log-probabilities, unreached items left
    out: the lists the beam search gives with ``history_weight=w``, the same floats in the same
    batches. Spread over the ranks under torchrun like :func:`kgglm.tasks.ranking.rank`."""
    users = data.eval_users(split)
    batch, k = settings.eval_batch_size, min(settings.max_k, data.n_items)
    start, stop = distributed.shard_batches(len(users), batch)
    mine, scorer = users[start:stop], ExpertScorer(model, vocab)
    paths_only = generation.replace(history_weight=0.0, explanation="best")  # shown paths: not needed
    parts: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in weights]
    for at in range(0, len(mine), batch):
        part = mine[at:at + batch]
        decoded = recommend(model, data, part, vocab=vocab, generation=paths_only, n_return=k, split=split,
                            batch_size=batch, return_item_scores=True)
        scores = torch.from_numpy(decoded.item_scores)
        hist = torch.from_numpy(scorer.score_items(part))
        for i, w in enumerate(weights):
            top, items = torch.topk(scores + w * hist, k, dim=1)
            parts[i].append((torch.where(torch.isfinite(top), items, -1).numpy(), top.numpy()))
    lists = []
    for chunks in parts:
        items = np.concatenate([c[0] for c in chunks]) if chunks else np.zeros((0, k), np.int64)
        top = np.concatenate([c[1] for c in chunks]) if chunks else np.zeros((0, k), np.float32)
        lists.append(distributed.gather_recommendations(Recommendations(
            users=mine.copy(), items=items, scores=top, paths=np.zeros((len(mine), 0, 0), np.int64), split=split)))
    return lists
