"""Katib's median stopping rule, as a plain function over learning curves."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from functions.tuning.spec import EarlyStopping, Objective


def should_stop(
    curve: Sequence[float], completed: Sequence[Sequence[float]], objective: Objective, rule: EarlyStopping
) -> bool:
    """Stop when, at step s = len(curve) ≥ start_step, the trial's best value so far is strictly worse than the
    median of the completed trials' running averages up to step s (needs ``min_trials_required`` of them)."""
    step = len(curve)
    if step < rule.start_step:
        return False
    reference = [_running_average(c, step) for c in completed if len(c) >= 1]
    if len(reference) < rule.min_trials_required:
        return False
    median = statistics.median(reference)
    best = max(curve) if objective.type == "maximize" else min(curve)
    return objective.better(median, best)


def _running_average(curve: Sequence[float], step: int) -> float:
    window = curve[:step]
    return sum(window) / len(window)
