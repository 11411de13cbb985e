"""Model selection on validation scores: RecBole's early-stopping rule, for the trainer and the baselines."""

from __future__ import annotations

import math


def early_stopping(score: float, best: float | None, bad_evals: int, patience: int) -> tuple[bool, int, bool]:
    """One evaluation under RecBole's ``early_stopping`` rule; returns ``(improved, bad_evals, stop)``.

    Higher is better and only a strictly higher score than ``best`` improves (a tie does not; None:
    no best yet). A NaN score never improves (it would compare false with every later score).
    ``bad_evals`` counts the evaluations since the last improvement (RecBole's ``cur_step``), and
    training stops after *more than* ``patience`` of them.
    """
    improved = not math.isnan(score) and (best is None or score > best)
    bad_evals = 0 if improved else bad_evals + 1
    return improved, bad_evals, bad_evals > patience
