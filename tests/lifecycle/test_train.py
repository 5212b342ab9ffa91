"""Train: digits reach ≥ 0.97 test accuracy with MLP and CNN, the ONNX export (normalization included) matches
PyTorch, metrics stream per epoch, and an interrupted training resumes from its checkpoint."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest
import torch
from cloudevents.core.v1.event import CloudEvent

from functions import featurize, ingest, train
from functions.contract import MODEL_TRAINED
from functions.ml.features import read_features
from functions.ml.training import TrainParams, state_bytes, state_from_bytes
from functions.ml.training import train as train_loop
from infra.errors import InvalidRequest
from tests.lifecycle.helpers import arrived, digits_csv, put_digits_idx


def _features(ctx, event):
    return featurize.handle(ingest.handle(event, ctx), ctx)


def _onnx_test_accuracy(ctx, data):
    splits, _, _ = read_features(ctx.store, data["features"]["prefix"])
    session = ort.InferenceSession(ctx.store.get(data["onnx_key"]), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()[0]
    probs, labels = session.run(None, {inputs.name: splits.x["test"].astype(np.float32)})  # raw pixels in
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(labels, probs.argmax(axis=1))  # numbered classes: the label is the class number
    return float((labels == splits.y["test"]).mean())


def test_mlp_on_tabular_digits(ctx, digits):
    ctx.store.put("raw/digits/d.csv", digits_csv(digits))
    event = arrived("raw/digits/d.csv", ctx.store, options={"model_name": "digits-mlp"})
    out = train.handle(_features(ctx, event), ctx)
    assert out.get_type() == MODEL_TRAINED and out.get_extension("mode") == "train"
    data = out.get_data()
    assert data["trial"] is None and data["status"] == "Succeeded" and data["model_name"] == "digits-mlp"
    assert data["metrics"]["test_accuracy"] >= 0.97
    assert data["metrics"]["onnx_max_abs_diff"] <= 1e-4
    assert _onnx_test_accuracy(ctx, data) == pytest.approx(data["metrics"]["test_accuracy"], abs=1e-6)
    assert data["signature"]["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert data["signature"]["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
        {"name": "label", "datatype": "INT64", "shape": [-1]},
    ]
    assert data["task"] == "classification" and data["classes"] == list(range(10))
    lines = ctx.store.get(data["metrics_key"]).decode().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(1, data["metrics"]["epochs"] + 1))
    assert (
        data["lineage"]["dataset"].startswith("datasets/digits/")
        and data["lineage"]["raw"][0]["key"] == "raw/digits/d.csv"
    )


def test_cnn_on_idx_digit_images(ctx, digits):
    key = put_digits_idx(ctx.store, "raw/digits/train", digits)
    data = train.handle(_features(ctx, arrived(key, ctx.store)), ctx).get_data()
    assert data["params"]["model"] == "auto" and data["signature"]["inputs"][0]["shape"] == [-1, 8, 8]
    assert data["metrics"]["test_accuracy"] >= 0.97
    assert data["metrics"]["onnx_max_abs_diff"] <= 1e-4
    assert _onnx_test_accuracy(ctx, data) >= 0.97


def test_redelivery_after_success_announces_the_same_model_without_training(ctx, digits, monkeypatch):
    ctx.store.put("raw/digits/d.csv", digits_csv(digits))
    ready = _features(ctx, arrived("raw/digits/d.csv", ctx.store, options={"train": {"epochs": 2}}))
    first = train.handle(ready, ctx).get_data()
    monkeypatch.setattr(train, "train", lambda *a, **k: pytest.fail("trained again"))
    assert train.handle(ready, ctx).get_data() == first


class MemoryCheckpointer:
    def __init__(self):
        self.blob = None

    def load(self):
        return state_from_bytes(self.blob) if self.blob else None

    def save(self, state):
        self.blob = state_bytes(state)


class Crash(Exception):
    pass


def test_interrupted_training_resumes_from_last_checkpoint_and_matches(ctx, digits):
    ctx.store.put("raw/digits/d.csv", digits_csv(digits))
    ready = _features(ctx, arrived("raw/digits/d.csv", ctx.store)).get_data()
    splits, transform, _manifest = read_features(ctx.store, ready["prefix"])
    params = TrainParams(epochs=5, hidden=64)
    straight = train_loop(splits, transform, 10, params)

    def crash_after_third(history):
        if len(history) == 3:
            raise Crash
        return False

    checkpoints = MemoryCheckpointer()
    with pytest.raises(Crash):
        train_loop(splits, transform, 10, params, checkpointer=checkpoints, on_epoch=crash_after_third)
    resumed = train_loop(splits, transform, 10, params, checkpointer=checkpoints)
    assert resumed.resumed_from == 2  # epoch 3's checkpoint was never written: the crash came first
    assert [m.epoch for m in resumed.history] == [1, 2, 3, 4, 5]
    assert resumed.history == straight.history
    for a, b in zip(resumed.model.state_dict().values(), straight.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_trainings_side_by_side_in_one_process_each_match_their_run_alone(ctx, digits):
    # parallel trials run in one function process's threads: neither may draw from the other's random stream
    ctx.store.put("raw/digits/d.csv", digits_csv(digits))
    ready = _features(ctx, arrived("raw/digits/d.csv", ctx.store)).get_data()
    splits, transform, _manifest = read_features(ctx.store, ready["prefix"])
    runs = [TrainParams(epochs=3, hidden=64, dropout=0.4, seed=seed) for seed in (1, 2)]
    alone = [train_loop(splits, transform, 10, params) for params in runs]
    in_step = threading.Barrier(len(runs))  # both start each epoch together, so their batches interleave

    def with_the_other(history):
        in_step.wait()
        return False

    def side_by_side(params):
        return train_loop(splits, transform, 10, params, on_epoch=with_the_other)

    with ThreadPoolExecutor(len(runs)) as pool:
        together = list(pool.map(side_by_side, runs))
    for one, other in zip(together, alone, strict=True):
        assert one.history == other.history
        for a, b in zip(one.model.state_dict().values(), other.model.state_dict().values(), strict=True):
            torch.testing.assert_close(a, b)


def test_a_step_crash_resumes_from_the_stored_checkpoint(ctx, digits, monkeypatch):
    ctx.store.put("raw/digits/d.csv", digits_csv(digits))
    ready = _features(ctx, arrived("raw/digits/d.csv", ctx.store, options={"train": {"epochs": 4}}))
    runid = ready.get_extension("runid")
    real_hook = train.epoch_hook

    def crashing_hook(store, job, log):
        hook = real_hook(store, job, log)

        def on_epoch(history):
            hook(history)
            if len(history) == 2:
                raise Crash
            return False

        return on_epoch

    monkeypatch.setattr(train, "epoch_hook", crashing_hook)
    with pytest.raises(Crash):
        train.handle(ready, ctx)
    assert ctx.store.exists(f"runs/{runid}/checkpoint.pt") and not ctx.store.exists(f"runs/{runid}/result.json")
    monkeypatch.setattr(train, "epoch_hook", real_hook)
    data = train.handle(ready, ctx).get_data()
    lines = [json.loads(x) for x in ctx.store.get(data["metrics_key"]).decode().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2, 3, 4] and data["metrics"]["epochs"] == 4


def _trial_request(ready, trial, params, early_stopping=None):
    from eventing.events import new_event
    from functions.contract import TRIAL_REQUESTED

    data = {
        "experiment": ready.get_extension("runid"),
        "trial": trial,
        "params": params,
        "features": ready.get_data(),
        "objective": {"metric": "val_accuracy", "type": "maximize"},
        "early_stopping": early_stopping,
    }
    return new_event(TRIAL_REQUESTED, "/t", data, cause=ready, extensions={"mode": "trial"})


def test_trial_stops_early_under_the_median_rule_and_says_so(ctx, digits):
    from functions.tuning.experiment import SUCCEEDED, Experiment, Trial, save_experiment

    ctx.store.put("raw/digits/d.csv", digits_csv(digits))
    ready = _features(ctx, arrived("raw/digits/d.csv", ctx.store))
    runid = ready.get_extension("runid")
    done = {f"t{i}": Trial(f"t{i}", i, {}, SUCCEEDED, 0.99, (0.99,) * 6) for i in range(3)}
    save_experiment(
        ctx.store,
        Experiment(
            runid, {"parameters": [{"name": "lr", "type": "double", "min": 0.1, "max": 1}]}, ready.get_data(), done
        ),
    )
    request = _trial_request(
        ready, "trial-0003", {"lr": 1e-5, "hidden": 16, "epochs": 6}, {"min_trials_required": 3, "start_step": 2}
    )
    out = train.handle(request, ctx)
    assert out.get_extension("mode") == "trial"
    data = out.get_data()
    assert data["status"] == "EarlyStopped" and data["metrics"]["epochs"] == 2 and len(data["curve"]) == 2
    assert data["onnx_key"] == f"runs/{runid}/trials/trial-0003/model.onnx"
    assert ctx.store.exists(f"runs/{runid}/trials/trial-0003/metrics.jsonl")


def test_trial_with_unknown_parameter_reports_failure(ctx, digits):
    ctx.store.put("raw/digits/d.csv", digits_csv(digits))
    ready = _features(ctx, arrived("raw/digits/d.csv", ctx.store))
    data = train.handle(_trial_request(ready, "trial-0000", {"momentum": 0.9}), ctx).get_data()
    assert data["status"] == "Failed" and "momentum" in data["reason"]


def test_export_check_refuses_a_mismatch(digits):
    from functions.ml.export import ExportMismatch, check_export, export_onnx
    from functions.ml.features import fit_transform
    from functions.ml.models import build_model

    x = digits.flat.astype(np.float32)
    transform = fit_transform(x, "tabular")
    model = build_model("mlp", transform, 10, hidden=16, layers=1, dropout=0.0, channels=4).eval()
    onnx = export_onnx(model, transform.input_shape)
    assert check_export(onnx, model, x) <= 1e-4
    with torch.no_grad():
        next(model.parameters()).add_(0.5)  # the PyTorch model moves on; the exported graph does not
    with pytest.raises(ExportMismatch, match="differs from PyTorch"):
        check_export(onnx, model, x)


@pytest.mark.parametrize(
    "data, reason",
    [
        ({"dataset": "digits"}, "features need a prefix"),
        ({"dataset": "digits", "prefix": "features/digits/missing/"}, "no complete features version"),
    ],
)
def test_features_that_are_not_there_are_refused(ctx, data, reason):
    from eventing.events import new_event
    from functions.contract import FEATURES_READY

    with pytest.raises(InvalidRequest, match=reason):
        train.handle(new_event(FEATURES_READY, "/t", data, extensions={"mode": "train"}), ctx)
    assert list(ctx.store.list("runs/")) == []


def test_trial_request_without_features_is_refused(ctx):
    from eventing.events import new_event
    from functions.contract import TRIAL_REQUESTED

    with pytest.raises(InvalidRequest, match=r"data\.features"):
        train.handle(new_event(TRIAL_REQUESTED, "/t", {"trial": "trial-0000"}), ctx)


def test_bad_training_options_of_a_plain_run_are_refused(ctx, digits):
    from functions.runoptions import RunOptions, save_options

    ctx.store.put("raw/digits/d.csv", digits_csv(digits))
    ready = _features(ctx, arrived("raw/digits/d.csv", ctx.store))
    save_options(ctx.store, ready.get_extension("runid"), RunOptions(train={"optimizer": "lbfgs"}))
    with pytest.raises(InvalidRequest, match="bad training parameters"):
        train.handle(ready, ctx)


def test_fashion_mnist_sized_images_get_the_kubeflow_cnn_and_export():
    from functions.ml.export import check_export, export_onnx
    from functions.ml.features import Transform
    from functions.ml.models import build_model

    transform = Transform("image", (28, 28), np.asarray(33.0, np.float32), np.asarray(78.0, np.float32))
    model = build_model("auto", transform, 10, hidden=500, layers=1, dropout=0.0, channels=20).eval()
    convs = [m for m in model.net.features if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(20, (5, 5)), (50, (5, 5))]
    assert model.net.head[1].in_features == 4 * 4 * 50
    x = np.random.default_rng(0).integers(0, 256, size=(16, 28, 28)).astype(np.float32)
    assert check_export(export_onnx(model, (28, 28)), model, x) <= 1e-4


def test_features_without_a_runid_are_refused_before_anything_is_trained(ctx, digits):
    ctx.store.put("raw/digits/d.csv", digits_csv(digits))
    ready = _features(ctx, arrived("raw/digits/d.csv", ctx.store, options={"train": {"epochs": 1}}))
    attributes = {k: v for k, v in ready.get_attributes().items() if k != "runid"}
    with pytest.raises(InvalidRequest, match="needs the runid extension"):
        train.handle(CloudEvent(attributes, ready.get_data()), ctx)
    assert not list(ctx.store.list("runs/None/"))
