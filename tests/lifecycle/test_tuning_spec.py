"""The experiment spec (``functions/tuning/spec.py``): Katib's names and knflow's, the objective's direction and
goal, the trial budget, early stopping, and each parameter's rules, with a case on each side of every boundary."""

from __future__ import annotations

import pytest

from functions.tuning.spec import EarlyStopping, Objective, Parameter, parse_spec
from infra.errors import InvalidRequest

LR = {"name": "lr", "type": "double", "min": 0.001, "max": 0.1}


def spec(**raw):  # type: ignore[no-untyped-def]
    return parse_spec({"parameters": [LR], **raw})


def refused(raw, reason: str) -> None:
    with pytest.raises(InvalidRequest, match=reason):
        parse_spec(raw)


def test_a_minimal_spec_takes_the_defaults():
    got = spec()
    assert got.objective == Objective("val_accuracy", "maximize", None)
    assert got.parameters == (Parameter("lr", "double", 0.001, 0.1),)
    assert (got.algorithm, got.settings, got.max_trials, got.parallel_trials) == ("tpe", {}, 8, 2)
    assert (got.max_failed_trials, got.early_stopping, got.seed) == (3, None, 0)


def test_katibs_names_are_read():
    got = parse_spec(
        {
            "objective": {"objectiveMetricName": "val_loss", "type": "minimize", "goal": 0.1},
            "algorithm": {"algorithmName": "random", "algorithmSettings": [], "settings": {"k": 1}},
            "parameters": [
                {
                    "name": "lr",
                    "parameterType": "double",
                    "feasibleSpace": {"min": "0.001", "max": "0.1", "step": "0.01"},
                },
                {"name": "opt", "parameterType": "discrete", "feasibleSpace": {"list": ["adam", "sgd"]}},
            ],
            "maxTrialCount": 12,
            "parallelTrialCount": 3,
            "maxFailedTrialCount": 1,
            "earlyStopping": {"minTrialsRequired": 5, "startStep": 4},
            "seed": 9,
        }
    )
    assert got.objective == Objective("val_loss", "minimize", 0.1)
    assert (got.algorithm, got.settings) == ("random", {"k": 1})
    assert got.parameters == (
        Parameter("lr", "double", 0.001, 0.1, False, 0.01),
        Parameter("opt", "categorical", values=("adam", "sgd")),
    )
    assert (got.max_trials, got.parallel_trials, got.max_failed_trials, got.seed) == (12, 3, 1, 9)
    assert got.early_stopping == EarlyStopping(5, 4)


def test_the_metric_name_says_the_direction_unless_a_type_is_given():
    assert spec(objective={"metric": "val_rmse"}).objective.type == "minimize"
    assert spec(objective={"metric": "val_f1"}).objective.type == "maximize"
    assert spec(objective={"metric": "val_rmse", "type": "maximize"}).objective.type == "maximize"
    assert spec(objective={"metric": "m", "objectiveMetricName": "other"}).objective.metric == "m"
    refused({"parameters": [LR], "objective": {"type": "up"}}, "objective.type must be maximize or minimize, got 'up'")


def test_better_is_strict_in_the_objectives_direction():
    up, down = Objective(type="maximize"), Objective(type="minimize")
    assert up.better(2, 1) and not up.better(1, 1) and not up.better(1, 2)
    assert down.better(1, 2) and not down.better(1, 1) and not down.better(2, 1)


def test_a_goal_is_reached_at_its_value_in_the_objectives_direction():
    up, down = Objective(type="maximize", goal=0.9), Objective(type="minimize", goal=0.1)
    assert up.reached(0.9) and up.reached(0.95) and not up.reached(0.89)
    assert down.reached(0.1) and down.reached(0.05) and not down.reached(0.11)
    assert not Objective().reached(1e9) and not Objective(type="minimize").reached(-1e9)


def test_the_algorithm_is_one_knflow_has():
    for name in ("random", "grid", "tpe", "hyperband"):
        assert spec(algorithm=name).algorithm == name
        assert spec(algorithm={"name": name}).algorithm == name
    refused({"parameters": [LR], "algorithm": "bayes"}, r"unknown search algorithm 'bayes' \(one of random, grid, tpe")
    refused({"parameters": [LR], "algorithm": {"algorithmName": "x"}}, "unknown search algorithm 'x'")


def test_the_budget_needs_at_least_one_trial_and_one_at_a_time():
    assert (spec(maxTrialCount=1).max_trials, spec(parallelTrialCount=1).parallel_trials) == (1, 1)
    for bad in ({"maxTrialCount": 0}, {"parallelTrialCount": 0}):
        refused({"parameters": [LR], **bad}, "^maxTrialCount and parallelTrialCount must be at least 1$")


def test_early_stopping_takes_katibs_defaults():
    assert spec(earlyStopping={"minTrialsRequired": 4}).early_stopping == EarlyStopping(4, 2)
    assert spec(earlyStopping={"startStep": 1}).early_stopping == EarlyStopping(3, 1)
    assert spec(earlyStopping={}).early_stopping is None  # an empty block asks for nothing


def test_a_spec_must_be_an_object_with_parameters():
    refused([LR], "^the tuning spec must be a JSON object$")
    refused({}, "^the tuning spec has no parameters to search$")
    refused({"parameters": []}, "the tuning spec has no parameters to search")


def test_a_parameter_needs_a_name_and_a_known_type():
    refused({"parameters": [{"type": "double", "min": 0, "max": 1}]}, r"parameter None: type must be one of \('double'")
    refused({"parameters": [{"name": "x", "type": "float", "min": 0, "max": 1}]}, "parameter 'x': type must be one of")
    refused({"parameters": [{"name": "x", "min": 0, "max": 1}]}, "parameter 'x': type must be one of")


def test_a_categorical_parameter_needs_values():
    assert spec(parameters=[{"name": "c", "type": "categorical", "values": [1]}]).parameters[0].values == (1,)
    refused({"parameters": [{"name": "c", "type": "categorical", "values": []}]}, "'c': a categorical parameter needs")
    refused({"parameters": [{"name": "c", "type": "categorical"}]}, "'c': a categorical parameter needs values")


@pytest.mark.parametrize(
    "space", [{"max": 1}, {"min": 0}, {"min": "a", "max": 1}, {"min": None, "max": 1}, {"min": 0, "max": [1]}]
)
def test_a_range_parameter_needs_numeric_bounds(space):
    refused({"parameters": [{"name": "n", "type": "int", **space}]}, "parameter 'n': a int parameter needs numeric min")


def test_a_range_needs_min_below_max_and_a_log_scale_above_zero():
    assert spec(parameters=[{"name": "n", "type": "int", "min": 1, "max": 2}]).parameters[0] == Parameter(
        "n", "int", 1, 2
    )
    log = spec(parameters=[{"name": "lr", "type": "double", "min": 1e-9, "max": 1, "log": True}]).parameters[0]
    assert log.log and log.min == 1e-9
    katib_log = {"name": "lr", "type": "double", "feasibleSpace": {"min": 0.1, "max": 1, "distribution": "logUniform"}}
    assert spec(parameters=[katib_log]).parameters[0].log
    uniform = {"name": "lr", "type": "double", "feasibleSpace": {"min": 0.1, "max": 1, "distribution": "uniform"}}
    assert not spec(parameters=[uniform]).parameters[0].log
    reason = r"parameter 'x': need min < max \(and min > 0 on a log scale\)"
    refused({"parameters": [{"name": "x", "type": "double", "min": 1, "max": 1}]}, reason)
    refused({"parameters": [{"name": "x", "type": "double", "min": 2, "max": 1}]}, reason)
    refused({"parameters": [{"name": "x", "type": "double", "min": 0, "max": 1, "log": True}]}, reason)
    assert spec(parameters=[{"name": "x", "type": "double", "min": 0, "max": 1}]).parameters[0].min == 0
