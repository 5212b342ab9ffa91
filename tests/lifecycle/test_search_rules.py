"""Search rules the broader tests of ``test_search.py`` leave loose: TPE repeats itself for a seed and its history,
starts modelling after its startup trials, and Hyperband names the resource it hands out as its settings say."""

from __future__ import annotations

from functions.tuning.experiment import SUCCEEDED, Trial, trial_id
from functions.tuning.search import suggest
from functions.tuning.spec import parse_spec

SPACE = [
    {"name": "x", "type": "double", "min": 0.0, "max": 1.0},
    {"name": "n", "type": "int", "min": 1, "max": 100, "log": True},
]


def _tpe(seed: int, **settings: object) -> dict:
    return {"parameters": SPACE, "maxTrialCount": 20, "algorithm": {"name": "tpe", "settings": settings}, "seed": seed}


def _history(count: int) -> list[Trial]:
    return [Trial(trial_id(i), i, {"x": i / count, "n": 1 + i}, SUCCEEDED, float(i)) for i in range(count)]


def test_tpe_suggests_the_same_trials_for_the_same_seed_and_history_and_others_for_another_seed() -> None:
    spec, history = parse_spec(_tpe(3)), _history(6)
    first = [s.params for s in suggest(spec, history, 3)]
    assert first == [s.params for s in suggest(parse_spec(_tpe(3)), history, 3)]
    assert first != [s.params for s in suggest(parse_spec(_tpe(4)), history, 3)]
    assert len({tuple(p.items()) for p in first}) == 3  # constant liar: one batch never repeats a suggestion


def test_hyperband_hands_out_the_resource_its_settings_name() -> None:
    raw = {
        "parameters": SPACE,
        "maxTrialCount": 20,
        "algorithm": {"name": "hyperband", "settings": {"r_max": 9, "eta": 3, "resource": "steps"}},
    }
    suggestions = suggest(parse_spec(raw), [], 2)
    assert all("steps" in s.params and "epochs" not in s.params for s in suggestions)
