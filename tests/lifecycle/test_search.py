"""The search algorithms and the median stopping rule as plain functions, on cheap objectives (no training)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from functions.tuning.earlystop import should_stop
from functions.tuning.experiment import EARLY_STOPPED, SUCCEEDED, Trial, trial_id
from functions.tuning.search import grid_values, hyperband_plan, suggest
from functions.tuning.spec import EarlyStopping, Objective, parse_spec
from infra.errors import InvalidRequest

SPACE = [
    {"name": "lr", "type": "double", "min": 1e-5, "max": 1.0, "log": True},
    {"name": "hidden", "type": "int", "min": 8, "max": 512},
    {"name": "dropout", "type": "double", "min": 0.0, "max": 0.9},
    {"name": "optimizer", "type": "categorical", "values": ["adam", "sgd", "rmsprop"]},
]


def objective(p: dict) -> float:
    """A cheap stand-in for validation accuracy with one narrow optimum (lr≈3e-3, hidden≈300, dropout≈0.2, adam)."""
    loss = (math.log10(p["lr"]) + 2.5) ** 2 + ((p["hidden"] - 300) / 120) ** 2 + ((p["dropout"] - 0.2) / 0.25) ** 2
    return 1.0 - 0.1 * loss - (0.0 if p["optimizer"] == "adam" else 0.15)


def run(spec_raw: dict, evaluate=objective, batch: int = 1) -> list[Trial]:
    """Drive an algorithm to its budget the way tune does: ask, evaluate, record."""
    spec = parse_spec(spec_raw)
    trials: list[Trial] = []
    while len(trials) < spec.max_trials:
        suggestions = suggest(spec, trials, min(batch, spec.max_trials - len(trials)))
        if not suggestions:
            break
        for s in suggestions:
            index = len(trials)
            trials.append(Trial(trial_id(index), index, s.params, SUCCEEDED, evaluate(s.params), meta=s.meta))
    return trials


def best(trials: list[Trial]) -> float:
    return max(t.value for t in trials)


def test_tpe_beats_random_search_with_the_same_budget():
    budget = {"parameters": SPACE, "maxTrialCount": 40, "objective": {"type": "maximize"}}
    tpe = [best(run({**budget, "algorithm": "tpe", "seed": seed})) for seed in range(3)]
    rnd = [best(run({**budget, "algorithm": "random", "seed": seed})) for seed in range(3)]
    assert np.mean(tpe) > np.mean(rnd), (tpe, rnd)


def test_random_search_is_reproducible_per_seed_and_respects_the_space():
    spec = {"parameters": SPACE, "maxTrialCount": 20, "algorithm": "random", "seed": 3}
    first, again = run(spec), run(spec)
    assert [t.params for t in first] == [t.params for t in again]
    for t in first:
        assert 1e-5 <= t.params["lr"] <= 1.0 and 8 <= t.params["hidden"] <= 512 and isinstance(t.params["hidden"], int)
        assert t.params["optimizer"] in ("adam", "sgd", "rmsprop")


def test_tpe_asks_distinct_points_in_one_batch():
    spec = {"parameters": SPACE, "maxTrialCount": 12, "algorithm": "tpe"}
    trials = run(spec, batch=4)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 12


def test_grid_covers_the_product_once_then_stops():
    spec = {
        "algorithm": "grid",
        "maxTrialCount": 100,
        "parameters": [
            {"name": "lr", "type": "double", "min": 1e-3, "max": 1e-1, "log": True},
            {"name": "hidden", "type": "int", "min": 32, "max": 128, "step": 32},
            {"name": "optimizer", "type": "categorical", "values": ["adam", "sgd"]},
        ],
    }
    trials = run(spec, evaluate=lambda p: p["lr"], batch=3)
    assert len(trials) == 4 * 4 * 2
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 32
    assert grid_values(parse_spec(spec).parameters[0]) == pytest.approx([1e-3, 10 ** (-7 / 3), 10 ** (-5 / 3), 1e-1])


@pytest.mark.parametrize("batch", [1, 4])  # one at a time: a rung is filled over several asks
def test_hyperband_promotes_the_best_of_each_rung_with_more_resource(batch: int):
    spec = {
        "algorithm": {"name": "hyperband", "settings": {"r_max": 9, "eta": 3, "resource": "epochs"}},
        "maxTrialCount": 100,
        "parameters": SPACE[:3],
    }

    def curve(p):
        return objective({**p, "optimizer": "adam"}) * (1 - math.exp(-p["epochs"] / 3))

    trials = run(spec, evaluate=curve, batch=batch)
    plan = hyperband_plan(parse_spec(spec))
    assert len(trials) == sum(n for _, _, n, _ in plan)
    for bracket, rung, size, budget in plan:
        members = [t for t in trials if t.meta["bracket"] == bracket and t.meta["rung"] == rung]
        assert len(members) == size and all(t.params["epochs"] == budget for t in members)
        if rung:
            below = [t for t in trials if t.meta["bracket"] == bracket and t.meta["rung"] == rung - 1]
            top = sorted(below, key=lambda t: t.value, reverse=True)[:size]
            assert {t.meta["parent"] for t in members} == {t.id for t in top}


def test_median_stopping_ends_at_least_a_third_of_poor_trials_early():
    rng = np.random.default_rng(0)
    rule = EarlyStopping(min_trials_required=3, start_step=2)
    obj = parse_spec({"parameters": SPACE}).objective
    completed: list[list[float]] = []
    stopped = {"good": 0, "poor": 0}
    kinds = ["good"] * 4 + ["poor", "good", "poor", "poor", "good", "poor", "poor", "good", "poor", "poor"]
    for kind in kinds:
        ceiling = 0.95 if kind == "good" else 0.55
        full = [ceiling * (1 - math.exp(-(e + 1) / 2)) + rng.normal(0, 0.01) for e in range(10)]
        curve: list[float] = []
        for value in full:
            curve.append(value)
            if should_stop(curve, completed, obj, rule):
                stopped[kind] += 1
                break
        else:
            completed.append(curve)
    assert stopped["poor"] >= math.ceil(kinds.count("poor") / 3)
    assert stopped["good"] == 0


def test_median_stopping_waits_for_enough_completed_trials_and_the_start_step():
    obj = parse_spec({"parameters": SPACE}).objective
    rule = EarlyStopping(min_trials_required=3, start_step=3)
    done = [[0.9, 0.9, 0.9]] * 3
    assert not should_stop([0.1, 0.1], done, obj, rule)  # before start_step
    assert not should_stop([0.1, 0.1, 0.1], done[:2], obj, rule)  # too few completed
    assert should_stop([0.1, 0.1, 0.1], done, obj, rule)
    assert not should_stop([0.1, 0.1, 0.95], done, obj, rule)  # its best beats the median


def test_early_stopped_trials_still_inform_tpe():
    spec = parse_spec({"parameters": SPACE, "algorithm": "tpe", "settings": {"n_startup_trials": 2}})
    trials = [
        Trial(
            trial_id(i),
            i,
            run({"parameters": SPACE, "maxTrialCount": 3, "algorithm": "random"})[i].params,
            EARLY_STOPPED,
            0.1,
        )
        for i in range(3)
    ]
    assert len(suggest(spec, trials, 2)) == 2


@pytest.mark.parametrize(
    "spec, reason",
    [
        ({"parameters": []}, "no parameters"),
        ({"parameters": SPACE, "algorithm": "bayes"}, "unknown search algorithm"),
        ({"parameters": [{"name": "lr", "type": "double", "min": 0, "max": 1, "log": True}]}, "min > 0"),
        ({"parameters": [{"name": "x", "type": "float"}]}, "type must be"),
        ({"parameters": SPACE, "objective": {"type": "best"}}, "maximize or minimize"),
    ],
)
def test_bad_specs_are_refused(spec, reason):
    with pytest.raises(InvalidRequest, match=reason):
        parse_spec(spec)


def test_katib_spelling_is_accepted():
    spec = parse_spec(
        {
            "objective": {"type": "minimize", "objectiveMetricName": "val_loss", "goal": 0.05},
            "algorithm": {"algorithmName": "random"},
            "parameters": [
                {
                    "name": "lr",
                    "parameterType": "double",
                    "feasibleSpace": {"min": "0.001", "max": "0.1", "distribution": "logUniform"},
                },
                {"name": "optimizer", "parameterType": "categorical", "feasibleSpace": {"list": ["adam", "sgd"]}},
            ],
            "maxTrialCount": 6,
            "parallelTrialCount": 3,
            "maxFailedTrialCount": 1,
            "earlyStopping": {"name": "medianstop", "minTrialsRequired": 2, "startStep": 4},
        }
    )
    assert spec.objective.metric == "val_loss" and spec.objective.reached(0.04) and not spec.objective.reached(0.06)
    assert spec.parameters[0].log and spec.parameters[1].values == ("adam", "sgd")
    assert (spec.max_trials, spec.parallel_trials, spec.max_failed_trials) == (6, 3, 1)
    assert spec.early_stopping == EarlyStopping(2, 4)


def test_the_median_rule_averages_exactly_the_first_s_steps_of_each_completed_trial():
    from functions.tuning.earlystop import should_stop
    from functions.tuning.spec import EarlyStopping, Objective

    rule, objective = EarlyStopping(min_trials_required=1, start_step=2), Objective("val_accuracy", "maximize")
    completed = [[0.5, 0.5, 1.0]]  # running average at step 2: 0.5; at step 3 it would be 0.667
    assert not should_stop([0.6, 0.6], completed, objective, rule)  # 0.6 beats 0.5: keep going
    assert should_stop([0.4, 0.4], completed, objective, rule)  # 0.4 is worse than 0.5: stop
    minimize = Objective("val_loss", "minimize")
    assert not should_stop([0.45, 0.45], [[0.5, 0.5, 0.0]], minimize, rule)  # average 0.5, not 0.333


def test_median_rule_counts_a_completed_trial_of_one_step() -> None:
    rule = EarlyStopping(min_trials_required=1, start_step=2)
    obj = Objective("val_accuracy", "maximize")
    assert should_stop([0.1, 0.2], [[0.9]], obj, rule)  # its one step is the reference
    assert not should_stop([0.1, 0.2], [], obj, rule)


def test_median_rule_takes_a_minimized_trials_lowest_value_as_its_best() -> None:
    rule = EarlyStopping(min_trials_required=1, start_step=2)
    loss = Objective("val_loss", "minimize")
    assert not should_stop([5.0, 1.0], [[2.0, 2.0]], loss, rule)  # its best, 1.0, beats the median 2.0
    assert should_stop([5.0, 3.0], [[2.0, 2.0]], loss, rule)  # its best, 3.0, is worse


@pytest.mark.parametrize(
    ("settings", "plan"),
    [
        (  # the defaults: eta 3, r_max 9
            {},
            [(2, 0, 9, 1), (2, 1, 3, 3), (2, 2, 1, 9), (1, 0, 5, 3), (1, 1, 1, 9), (0, 0, 3, 9)],
        ),
        (
            {"eta": 2, "r_max": 8},
            [
                *[(3, 0, 8, 1), (3, 1, 4, 2), (3, 2, 2, 4), (3, 3, 1, 8)],
                *[(2, 0, 6, 2), (2, 1, 3, 4), (2, 2, 1, 8)],
                *[(1, 0, 4, 4), (1, 1, 2, 8)],
                (0, 0, 4, 8),
            ],
        ),
        ({"eta": 3, "r_max": 3}, [(1, 0, 3, 1), (1, 1, 1, 3), (0, 0, 2, 3)]),
    ],
)
def test_hyperband_plan_is_brackets_of_successive_halving_from_eta_and_r_max(
    settings: dict[str, int], plan: list[tuple[int, int, int, int]]
) -> None:
    spec = parse_spec({"parameters": SPACE, "algorithm": {"name": "hyperband", "settings": settings}})
    assert hyperband_plan(spec) == plan


def test_grid_points_of_a_range_without_step_are_evenly_spaced_and_ints_rounded() -> None:
    spec = parse_spec({"parameters": SPACE})
    by_name = {p.name: p for p in spec.parameters}
    assert grid_values(by_name["dropout"]) == pytest.approx([0.0, 0.3, 0.6, 0.9])
    assert grid_values(by_name["hidden"]) == [8, 176, 344, 512]
    assert all(isinstance(v, int) for v in grid_values(by_name["hidden"]))


@pytest.mark.parametrize("algorithm", ["random", "grid", "tpe"])
def test_an_algorithm_suggests_exactly_the_count_asked_after_earlier_trials(algorithm: str) -> None:
    spec = parse_spec({"parameters": SPACE, "algorithm": {"name": algorithm}, "maxTrialCount": 50})
    first = suggest(spec, [], 3)
    trials = [Trial(trial_id(i), i, s.params, SUCCEEDED, 0.5, meta=s.meta) for i, s in enumerate(first)]
    assert len(first) == 3 and len(suggest(spec, trials, 2)) == 2


def test_tpe_keeps_int_parameters_ints_and_searches_log_ranges_on_a_log_scale() -> None:
    spec = parse_spec({"parameters": SPACE, "algorithm": {"name": "tpe"}, "seed": 3})
    trials: list[Trial] = []
    for i in range(12):
        (s,) = suggest(spec, trials, 1)
        trials.append(Trial(trial_id(i), i, s.params, SUCCEEDED, 0.5, meta=s.meta))
    assert all(isinstance(t.params["hidden"], int) for t in trials)
    assert sorted(t.params["lr"] for t in trials)[6] < 0.05  # a uniform draw over [1e-5, 1] would be near 0.5


def test_random_sampling_of_a_log_range_is_log_uniform() -> None:
    spec = parse_spec({"parameters": SPACE, "algorithm": {"name": "random"}})
    values = sorted(s.params["lr"] for s in suggest(spec, [], 200))
    assert values[100] < 0.05 and values[0] >= 1e-5 and values[-1] <= 1.0


def test_hyperband_gives_epochs_by_default_and_a_trials_values_depend_only_on_seed_and_index() -> None:
    spec = parse_spec({"parameters": SPACE, "algorithm": {"name": "hyperband"}, "maxTrialCount": 50})
    batch = suggest(spec, [], 3)
    one_by_one: list[Trial] = []
    for i in range(3):
        (s,) = suggest(spec, one_by_one, 1)
        one_by_one.append(Trial(trial_id(i), i, s.params, SUCCEEDED, 0.5, meta=s.meta))
    assert [s.params for s in batch] == [t.params for t in one_by_one]
    assert len({s.params["lr"] for s in batch}) == 3 and all(s.params["epochs"] == 1 for s in batch)
