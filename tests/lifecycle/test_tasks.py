"""The lifecycle steps in-process on data as users have it: iris with class names answers class names, diabetes
trains a regression with rmse / mae / r² whose deploy policy minimizes rmse, a categorical table serves raw values;
the model card carries the classes into the registry and ``knflow models``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from functions import featurize, ingest, register, train
from functions.deploy import decide, parse_policy
from functions.ml.export import onnx_feeds
from functions.ml.features import read_features
from functions.runoptions import parse_options
from functions.tuning.spec import parse_spec
from infra.settings import load_settings
from infra.store import open_store
from knflow.cli import main
from serving.registry import ModelRegistry
from tests.lifecycle.helpers import StepContext, arrived
from tests.lifecycle.tables import IRIS_CLASSES, SMALL, diabetes_csv, iris_csv, shop_csv

pytestmark = pytest.mark.slow


def _trained(ctx, key, blob, **options):
    ctx.store.put(key, blob)
    ready = featurize.handle(ingest.handle(arrived(key, ctx.store, options=options), ctx), ctx)
    return train.handle(ready, ctx)


def _served(ctx, data):
    """ONNX Runtime's answers for the raw test rows, and the test split."""
    splits, transform, _ = read_features(ctx.store, data["features"]["prefix"])
    session = ort.InferenceSession(ctx.store.get(data["onnx_key"]), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    feeds = onnx_feeds(transform, splits.x["test"], splits.c["test"])
    return dict(zip(names, session.run(names, feeds), strict=True)), splits


def test_iris_with_class_names_answers_class_names_and_its_card_lists_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    ctx = StepContext(store=open_store(f"file://{tmp_path / 'artifacts'}"), settings=load_settings(env={}))
    out = _trained(ctx, "raw/iris/iris.csv", iris_csv(), label="species", model_name="iris", train=SMALL)
    data = out.get_data()
    assert data["task"] == "classification" and data["classes"] == list(IRIS_CLASSES)
    assert data["signature"]["outputs"][1] == {"name": "label", "datatype": "BYTES", "shape": [-1]}
    assert data["metrics"]["test_accuracy"] >= 0.9
    answers, splits = _served(ctx, data)
    assert answers["label"].tolist() == [IRIS_CLASSES[i] for i in answers["probabilities"].argmax(axis=1)]
    right = np.mean(answers["label"] == np.asarray(IRIS_CLASSES)[splits.y["test"]])
    assert right == pytest.approx(data["metrics"]["test_accuracy"], abs=1e-6)

    registered = register.handle(out, ctx).get_data()
    assert registered["classes"] == list(IRIS_CLASSES) and registered["task"] == "classification"
    card = ModelRegistry(ctx.store).get("iris", registered["version"])
    assert card.classes == list(IRIS_CLASSES) and card.outputs[1].datatype == "BYTES"
    monkeypatch.setenv("KNFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("KNFLOW_ARTIFACTS", raising=False)
    capsys.readouterr()
    assert main(["models", "ls", "iris"]) == 0
    assert "classes setosa,versicolor,virginica" in capsys.readouterr().out
    assert main(["models", "show", "iris"]) == 0
    assert json.loads(capsys.readouterr().out)["classes"] == list(IRIS_CLASSES)


def test_diabetes_trains_a_regression_answering_predictions_in_the_targets_units(ctx):
    options = {"label": "progression", "task": "regression", "train": SMALL}
    out = _trained(ctx, "raw/diabetes/d.csv", diabetes_csv(), **options)
    data = out.get_data()
    metrics = data["metrics"]
    assert data["task"] == "regression" and data["classes"] == []
    assert set(metrics) == {
        *("test_loss", "test_rmse", "test_mae", "test_r2", "train_loss", "val_loss", "val_rmse", "val_mae", "val_r2"),
        *("epochs", "onnx_max_abs_diff"),
    }
    assert data["signature"]["outputs"] == [{"name": "prediction", "datatype": "FP32", "shape": [-1]}]
    answers, splits = _served(ctx, data)
    prediction = answers["prediction"]
    assert prediction.shape == (len(splits.y["test"]),)
    rmse = float(np.sqrt(np.mean((prediction - splits.y["test"]) ** 2)))
    assert rmse == pytest.approx(metrics["test_rmse"], rel=1e-4)  # ONNX Runtime answers what PyTorch measured
    assert metrics["test_rmse"] < float(splits.y["test"].std())  # better than guessing the mean
    assert metrics["test_r2"] > 0.1 and metrics["test_mae"] < metrics["test_rmse"]
    assert prediction.min() > 25 and prediction.max() < 346  # the target's units, not standardized ones
    epochs = [json.loads(line) for line in ctx.store.get(data["metrics_key"]).decode().splitlines()]
    assert len(epochs) == SMALL["epochs"] and {"val_rmse", "val_mae", "val_r2"} <= set(epochs[-1])
    assert "val_accuracy" not in epochs[-1]
    assert data["curve"] == [e["val_rmse"] for e in epochs]  # the default objective of a regression run


def test_a_categorical_table_serves_raw_values_and_unknown_categories(ctx):
    out = _trained(ctx, "raw/shop/s.csv", shop_csv(), label="decision", train=SMALL)
    data = out.get_data()
    assert [i["name"] for i in data["signature"]["inputs"]] == ["size", "color", "shape"]
    assert data["metrics"]["test_accuracy"] >= 0.85
    session = ort.InferenceSession(ctx.store.get(data["onnx_key"]), providers=["CPUExecutionProvider"])
    rows = {
        "size": np.array([[6.0], [14.0], [6.0]], np.float32),
        "color": np.array([["red"], ["red"], ["purple"]], dtype=object),
        "shape": np.array([["circle"], ["square"], ["hexagon"]], dtype=object),
    }
    probabilities, labels = session.run(None, rows)
    assert labels[:2].tolist() == ["keep", "drop"]  # red and small is kept, red and large dropped
    assert labels[2] in ("drop", "keep") and probabilities[2].sum() == pytest.approx(1.0, abs=1e-5)


def test_a_regression_trial_is_judged_on_val_rmse_minimized(ctx):
    from eventing.events import new_event
    from functions.contract import TRIAL_REQUESTED
    from functions.tuning.experiment import SUCCEEDED, Experiment, Trial, save_experiment

    options = {"label": "progression", "task": "regression", "train": SMALL}
    ctx.store.put("raw/diabetes/d.csv", diabetes_csv())
    ready = featurize.handle(ingest.handle(arrived("raw/diabetes/d.csv", ctx.store, options=options), ctx), ctx)
    runid = ready.get_extension("runid")
    done = {f"t{i}": Trial(f"t{i}", i, {}, SUCCEEDED, 40.0, (40.0,) * 6) for i in range(3)}
    spec = {"objective": {"metric": "val_rmse"}, "parameters": [{"name": "lr", "type": "double", "min": 0.1, "max": 1}]}
    save_experiment(ctx.store, Experiment(runid, spec, ready.get_data(), done))
    request = {
        "experiment": runid,
        "trial": "trial-0003",
        "params": {"lr": 1e-6, "hidden": 8, "epochs": 6},
        "features": ready.get_data(),
        "objective": {"metric": "val_rmse", "type": "minimize"},
        "early_stopping": {"min_trials_required": 3, "start_step": 2},
    }
    event = new_event(TRIAL_REQUESTED, "/t", request, cause=ready, extensions={"mode": "trial"})
    data = train.handle(event, ctx).get_data()
    assert data["status"] == "EarlyStopped" and data["metrics"]["epochs"] == 2  # far worse than rmse 40
    assert len(data["curve"]) == 2 and all(v > 40 for v in data["curve"])


def test_a_run_with_only_task_regression_tunes_and_deploys_on_rmse_minimized():
    lr = {"name": "lr", "type": "double", "min": 0.001, "max": 0.1}
    options = parse_options({"task": "regression", "tuning": {"parameters": [lr]}}, "run options")
    objective = parse_spec(options.tuning).objective
    assert (objective.metric, objective.type) == ("val_rmse", "minimize")
    policy = parse_policy(options.deploy, options.task)
    assert (policy.metric, policy.maximize) == ("test_rmse", False)
    assert decide(policy, {"test_rmse": 50.0}, {"test_rmse": 55.0}).deploy
    assert not decide(policy, {"test_rmse": 56.0}, {"test_rmse": 55.0}).deploy
    assert parse_policy({"metric": "test_r2"}, "regression").maximize
    assert not parse_policy({"metric": "test_mae"}, "regression").maximize
    assert parse_policy({}, "classification").metric == "test_accuracy"
    assert parse_spec({"objective": {"metric": "val_loss"}, "parameters": [lr]}).objective.type == "minimize"
