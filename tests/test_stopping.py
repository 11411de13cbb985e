"""RecBole's early-stopping rule, one implementation shared by the trainer and the baselines."""

from __future__ import annotations

import math

from kgglm.baselines import EarlyStopping
from kgglm.evaluate.stopping import early_stopping
from kgglm.train.state import TrainProgress

# score sequence with a tie, a NaN and a late improvement; patience 2
SCORES = [0.1, 0.3, 0.3, float("nan"), 0.2, 0.4, 0.4, 0.1, 0.0]
# worked by hand from RecBole's rule: improved only when strictly above the best so far
IMPROVED = [True, True, False, False, False, True, False, False, False]
BAD = [0, 0, 1, 2, 3, 0, 1, 2, 3]


def test_the_rule_counts_bad_evaluations_and_stops_after_more_than_patience():
    best, bad = None, 0
    for score, want_improved, want_bad in zip(SCORES, IMPROVED, BAD):
        improved, bad, stop = early_stopping(score, best, bad, patience=2)
        assert (improved, bad, stop) == (want_improved, want_bad, want_bad > 2)
        if improved:
            best = score
    assert best == 0.4 and not math.isnan(best)


def test_trainer_and_baselines_follow_the_same_rule():
    stopper, progress = EarlyStopping(patience=2), TrainProgress(run_id="r")
    for epoch, score in enumerate(SCORES):
        assert stopper.update(score) == progress.record_evaluation(epoch, score, {}, stopping_step=2)
        assert stopper.should_stop == progress.stopped_early and stopper.bad_steps == progress.bad_evals
    assert [h["best"] for h in progress.history] == IMPROVED
