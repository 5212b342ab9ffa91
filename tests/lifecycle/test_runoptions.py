"""Run options' validation (``functions/runoptions.py``): each rule with a case on each side of its boundary and the
reason a refusal names, and where a run's options come from."""

from __future__ import annotations

import json

import pytest

from functions.runoptions import (
    DATASET_OPTIONS,
    MAX_NAME,
    RunOptions,
    experiment_of,
    load_options,
    parse_options,
    resolve_options,
    run_key,
    save_options,
    with_objective,
)
from infra.errors import InvalidRequest

LR = {"name": "lr", "type": "double", "min": 0.001, "max": 0.1}


def refused(raw, reason: str, where: str = "knflow.json") -> None:
    with pytest.raises(InvalidRequest, match=reason) as caught:
        parse_options(raw, where)
    assert str(caught.value).startswith(f"{where}: ")


def test_no_options_are_the_defaults():
    assert parse_options(None, "w") == RunOptions()
    assert parse_options({}, "w") == RunOptions()
    assert RunOptions().mode == "train" and RunOptions(tuning={"parameters": [LR]}).mode == "tune"
    assert RunOptions(tuning={}).mode == "train"


def test_options_must_be_an_object_with_known_keys():
    refused([1], "run options must be a JSON object, not list")
    refused({"lable": "y"}, r"unknown run options \['lable'\] \(known: \['categorical', ")
    refused({"seed": 1, "x": 2, "a": 3}, r"unknown run options \['a', 'x'\]")


@pytest.mark.parametrize("fraction", [0.0001, 0.25, 0.4999, 1e-9])
def test_split_fractions_inside_the_open_range_are_accepted(fraction):
    options = parse_options({"val_fraction": fraction, "test_fraction": fraction}, "w")
    assert (options.val_fraction, options.test_fraction) == (fraction, fraction)


@pytest.mark.parametrize("name", ["val_fraction", "test_fraction"])
@pytest.mark.parametrize("fraction", [0, 0.5, -0.1, 1, "0.2", None])
def test_split_fractions_outside_the_open_range_are_refused(name, fraction):
    refused({name: fraction}, rf"{name} must be a number in \(0, 0.5\), got {fraction!r}")


def test_the_label_must_be_a_column_name():
    assert parse_options({"label": "y"}, "w").label == "y"
    refused({"label": ""}, "label must be a column name")
    refused({"label": 3}, "label must be a column name")


def test_an_experiment_is_a_printable_name_of_bounded_length():
    assert parse_options({"experiment": "x" * MAX_NAME}, "w").experiment == "x" * MAX_NAME
    assert parse_options({"experiment": "a"}, "w").experiment == "a"
    for bad in ("", "x" * (MAX_NAME + 1), " lead", "trail ", "tab\there", 7):
        refused({"experiment": bad}, f"experiment must be a name of 1 to {MAX_NAME} characters, got")


def test_the_experiment_is_the_named_one_or_the_data_sets():
    assert experiment_of(RunOptions(experiment="sweep"), "digits") == "sweep"
    assert experiment_of(RunOptions(), "digits") == "digits"


def test_categorical_is_a_list_of_column_names():
    assert parse_options({"categorical": ["a", "b"]}, "w").categorical == ["a", "b"]
    assert parse_options({"categorical": []}, "w").categorical == []
    for bad in ("a", ["a", ""], ["a", 1], {"a": 1}):
        refused({"categorical": bad}, "categorical must be a list of column names, got")


@pytest.mark.parametrize("name", ["train", "tuning", "deploy", "drift"])
def test_each_section_must_be_an_object(name):
    refused({name: [1]}, f"{name} must be a JSON object, got list")


def test_no_tuning_section_means_train_once_but_other_sections_must_be_objects():
    assert parse_options({"tuning": None}, "w").tuning is None
    refused({"deploy": None}, "deploy must be a JSON object, got NoneType")


def test_the_task_is_one_there_is():
    assert parse_options({"task": "regression"}, "w").task == "regression"
    refused({"task": "clustering"}, "clustering")


def test_a_bad_section_is_refused_when_the_run_starts_naming_the_section():
    refused({"train": {"epochs": 0}}, "bad training parameters")
    refused({"train": {"epochz": 1}}, "unknown training parameters")
    refused({"tuning": {"parameters": []}}, "the tuning spec has no parameters to search")
    refused({"deploy": {"canary_percent": 0}}, "bad deploy policy")
    refused({"drift": {"window": 1}}, "bad drift options")
    refused({"drift": {"threshold": "high"}}, r"bad drift options \(")
    refused({"tuning": {"parameters": [LR], "objective": {"metric": "val_rmse"}}}, "the tuning objective 'val_rmse'")
    refused({"train": {"entrypoint": "no-colon"}}, "train.entrypoint must be 'module:function'")
    refused({"task": "regression", "train": {"entrypoint": "t:f"}}, "supports classification runs only")


def test_a_value_of_the_wrong_type_inside_a_section_names_the_section():
    refused({"tuning": {"parameters": [LR], "maxTrialCount": "many"}}, r"bad tuning options \(ValueError: ")
    refused({"tuning": {"parameters": "lr"}}, r"bad tuning options \(AttributeError: ")


def test_the_tuning_objective_defaults_to_the_tasks():
    assert with_objective(None, "classification") is None
    assert with_objective({}, "classification") == {}
    assert with_objective({"parameters": [LR]}, "classification")["objective"] == {"metric": "val_accuracy"}
    assert with_objective({"objective": {"goal": 1}}, "regression")["objective"] == {"goal": 1, "metric": "val_rmse"}
    named = {"objective": {"metric": "val_loss"}}
    assert with_objective(named, "classification") is named
    katib = {"objective": {"objectiveMetricName": "val_loss"}}
    assert with_objective(katib, "classification") is katib
    odd = {"objective": "val_loss"}
    assert with_objective(odd, "classification") is odd
    options = parse_options({"task": "regression", "tuning": {"parameters": [LR]}}, "w")
    assert options.tuning["objective"] == {"metric": "val_rmse"}


def test_options_come_from_the_event_then_the_data_set_then_defaults(fstore):
    assert resolve_options(fstore, {"seed": 3}, "digits").seed == 3
    assert resolve_options(fstore, None, "digits") == RunOptions()
    key = f"raw/digits/{DATASET_OPTIONS}"
    fstore.put(key, json.dumps({"seed": 4}).encode())
    assert resolve_options(fstore, None, "digits").seed == 4
    assert resolve_options(fstore, {}, "digits").seed == 0  # the event's options, even empty, win
    fstore.put(key, b"{not json")
    with pytest.raises(InvalidRequest, match=r"raw/digits/knflow.json: not valid JSON"):
        resolve_options(fstore, None, "digits")
    fstore.put(key, json.dumps({"seed": 1, "bad": 1}).encode())
    with pytest.raises(InvalidRequest, match=r"^raw/digits/knflow.json: unknown run options"):
        resolve_options(fstore, None, "digits")
    with pytest.raises(InvalidRequest, match=r"^data.arrived options: unknown run options"):
        resolve_options(fstore, {"bad": 1}, "digits")


def test_a_runs_options_are_saved_once_and_read_by_its_runid(fstore):
    options = parse_options({"seed": 5, "categorical": ["c"]}, "w")
    save_options(fstore, "run-1", options)
    assert run_key("run-1") == "runs/run-1/run.json"
    assert json.loads(fstore.get("runs/run-1/run.json")) == options.to_dict()
    assert load_options(fstore, "run-1") == options
    assert load_options(fstore, "run-2") == RunOptions()
    assert load_options(fstore, None) == RunOptions() and load_options(fstore, "") == RunOptions()


def test_a_training_parameter_too_large_for_a_number_is_refused_not_a_crash():
    refused({"train": {"epochs": 1e400}}, r"training parameter epochs=inf is not a int")  # JSON's 1e400 reads as inf
    refused({"train": {"batch_size": -1e400}}, r"training parameter batch_size=-inf is not a int")


def test_a_raw_error_inside_a_section_names_that_section():
    refused({"deploy": {"canary_percent": "5"}}, r"^knflow.json: bad deploy options \(TypeError: ")
    refused({"train": {"entrypoint": "t:f", "workers": "2"}}, r"^knflow.json: train\.workers must be")
    refused({"drift": {"window": "10"}}, r"^knflow.json: bad drift options")


def test_the_deploy_policy_is_checked_against_the_runs_task():
    options = parse_options({"task": "regression", "deploy": {"metric": "test_rmse"}}, "w")
    assert options.deploy == {"metric": "test_rmse"}


def test_user_training_code_takes_the_runs_seed_which_must_be_whole():
    assert parse_options({"train": {"entrypoint": "train:fit"}, "seed": 3}, "w").seed == 3
    refused({"train": {"entrypoint": "train:fit"}, "seed": 1.5}, r"train\.seed must be a whole number, got 1\.5")


def test_saved_options_are_sorted_json_and_a_bad_saved_object_names_itself(fstore):
    save_options(fstore, "run-1", parse_options({"seed": 5}, "w"))
    raw = fstore.get("runs/run-1/run.json")
    assert raw == json.dumps(json.loads(raw), sort_keys=True).encode()
    [info] = fstore.list("runs/run-1/")
    assert info.content_type == "application/json"
    fstore.put("runs/run-2/run.json", json.dumps({"sede": 1}).encode())
    with pytest.raises(InvalidRequest, match=r"^runs/run-2/run\.json: unknown run options \['sede'\]"):
        load_options(fstore, "run-2")
