"""Drift and retrain: the PSI measure, a window of logged inputs per model version in the store, drift.detected once
per drifted window (idempotent on request ids), and a cooled-down retraining run of the newest raw data."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
from cloudevents.core.v1.event import CloudEvent

from eventing.events import new_event, runid_of
from functions import drift, featurize, ingest, retrain
from functions.contract import DATA_ARRIVED, DRIFT_DETECTED, INFERENCE_REQUEST, RETRAIN_STARTED
from functions.ml.drift import reference, scores
from functions.ml.features import read_features
from functions.runoptions import parse_options
from infra.errors import InvalidRequest
from serving.registry import ModelRegistry
from tests.lifecycle.helpers import StepContext, arrived, digits_csv
from tests.serving.helpers import mlp_onnx

WINDOW = 200  # unshifted windows of this size stay well below 0.2 on digits (64 features)
OPTIONS = {"model_name": "digits", "drift": {"window": WINDOW, "threshold": 0.2, "cooldown_s": 3600}}


def shifted(x: np.ndarray) -> np.ndarray:
    return np.clip(x + 3, 0, 16)  # a brighter background: every pixel that was 0 is 3


# -- the measure ------------------------------------------------------------------------------------------------------


def test_psi_is_near_zero_for_held_out_rows_and_large_for_shifted_ones(digits) -> None:  # type: ignore[no-untyped-def]
    x = digits.flat.astype(np.float32)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    train, held_out = x[order[:1200]], x[order[1200:1450]]
    ref = reference(train)
    assert scores(ref, train).max() < 1e-9  # the training rows are their own reference
    assert scores(ref, held_out).max() < 0.2  # 250 unshifted rows stay below the conventional threshold
    drifted = scores(ref, shifted(held_out))
    assert (drifted >= 0.2).sum() > 30 and drifted.max() > 5  # values above every training value count strongly
    with pytest.raises(ValueError, match="64 training features"):
        scores(ref, held_out[:, :10])


def test_a_constant_training_feature_still_shows_a_shift_up_or_down() -> None:
    train = np.zeros((100, 2))
    train[:, 1] = np.arange(100)
    ref = reference(train)
    up, down, same = (np.column_stack([np.full(50, v), np.arange(50)]) for v in (1.0, -1.0, 0.0))
    assert scores(ref, up)[0] > 5 and scores(ref, down)[0] > 5 and scores(ref, same)[0] < 1e-9


# -- the step ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Monitored:
    runid: str
    held_out: np.ndarray


@pytest.fixture
def monitored(ctx, digits) -> Monitored:  # type: ignore[no-untyped-def]
    """Digits ingested and featurized under a run with drift options, and a model registered with their lineage."""
    ctx.store.put("raw/digits/d.csv", digits_csv(digits))
    ingested = ingest.handle(arrived("raw/digits/d.csv", ctx.store, options=OPTIONS), ctx)
    ready = featurize.handle(ingested, ctx).get_data()
    runid = runid_of(ingested)
    lineage = {**ready["lineage"], "run": runid}
    ModelRegistry(ctx.store).register("digits", mlp_onnx(0), lineage=lineage)
    splits, _, _ = read_features(ctx.store, ready["prefix"])
    return Monitored(runid, splits.x["test"].reshape(-1, 64).astype(np.float32))


def request(m: Monitored, rows: np.ndarray, model: str = "digits") -> CloudEvent:
    data = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}]}
    extensions = {"pipeline": "lifecycle", "inferenceservicename": model, "modelversion": "1", "revision": "r-1"}
    return new_event(INFERENCE_REQUEST, "http://gw/v2/models/digits", data, runid=m.runid, extensions=extensions)


def feed(ctx, m: Monitored, rows: np.ndarray, per_request: int = 20) -> list[CloudEvent | None]:  # type: ignore[no-untyped-def]
    return [drift.handle(request(m, rows[i : i + per_request]), ctx) for i in range(0, len(rows), per_request)]


def test_an_unshifted_window_passes_and_a_shifted_one_is_detected_once_with_per_feature_scores(ctx, monitored) -> None:  # type: ignore[no-untyped-def]
    assert feed(ctx, monitored, monitored.held_out[:WINDOW]) == [None] * 10
    window = drift.Window.load(ctx.store, "digits", 1)
    assert window.index == 1 and window.closed["event"] is None and "0 drifted" in window.closed["summary"]

    answers = feed(ctx, monitored, shifted(monitored.held_out[:WINDOW]))
    assert answers[:9] == [None] * 9
    detected = answers[9]
    assert detected.get_type() == DRIFT_DETECTED and runid_of(detected) == monitored.runid
    assert detected.get_extension("pipeline") == "lifecycle" and detected.get_subject() == "digits/1"
    data = detected.get_data()
    assert (data["model"], data["version"], data["measure"], data["threshold"]) == ("digits", 1, "psi", 0.2)
    assert len(data["scores"]) == 64 and set(data["scores"]) == {f"p{i}" for i in range(64)}  # the CSV's columns
    assert data["score"] == max(data["scores"].values()) >= 0.2
    assert data["drifted"][0] == max(data["scores"], key=data["scores"].get)
    assert data["window"] == {"index": 1, "rows": WINDOW, "requests": 10}
    assert data["dataset"] == "digits" and data["lineage"]["run"] == monitored.runid

    assert feed(ctx, monitored, shifted(monitored.held_out[:60])) == [None] * 3  # the next window is not full yet


def test_redelivered_requests_count_once_and_re_announce_their_detection(ctx, monitored) -> None:  # type: ignore[no-untyped-def]
    rows = shifted(monitored.held_out[:WINDOW])
    first = request(monitored, rows[:30])
    assert drift.handle(first, ctx) is None and drift.handle(first, ctx) is None
    assert len(drift.Window.load(ctx.store, "digits", 1).rows) == 30  # not 60
    closing = request(monitored, rows[30:])
    detected = drift.handle(closing, ctx)
    again = drift.handle(closing, ctx)
    assert detected is not None and again.get_id() == detected.get_id()
    assert again.get_data() == detected.get_data()
    assert drift.handle(first, ctx) is None  # from the window before: still a duplicate
    assert len(drift.Window.load(ctx.store, "digits", 1).rows) == 0


def test_a_features_version_from_before_histograms_is_scored_from_its_training_split(ctx, monitored) -> None:  # type: ignore[no-untyped-def]
    prefix = ModelRegistry(ctx.store).get("digits", 1).lineage["features"]
    stats = json.loads(ctx.store.get(prefix + "stats.json"))
    del stats["histogram"]
    ctx.store.put(prefix + "stats.json", json.dumps(stats).encode())
    assert feed(ctx, monitored, shifted(monitored.held_out[:WINDOW]))[-1].get_type() == DRIFT_DETECTED


def test_models_without_training_lineage_and_requests_without_rows_are_skipped(ctx, monitored) -> None:  # type: ignore[no-untyped-def]
    ModelRegistry(ctx.store).register("byo", mlp_onnx(1))
    assert drift.handle(request(monitored, monitored.held_out[:10], model="byo"), ctx) is None
    wrong = request(monitored, monitored.held_out[:10, :32])
    assert drift.handle(wrong, ctx) is None
    assert drift.Window.load(ctx.store, "digits", 1) is None and drift.Window.load(ctx.store, "byo", 1) is None
    unnamed = new_event(INFERENCE_REQUEST, "/x", {"inputs": []}, runid=monitored.runid)
    with pytest.raises(InvalidRequest, match="modelversion"):
        drift.handle(unnamed, ctx)


@pytest.mark.parametrize(
    "bad", [{"window": 3}, {"threshold": 0}, {"cooldown_s": -1}, {"retrain": "yes"}, {"windows": 10}, [1]]
)
def test_bad_drift_options_are_refused_when_the_run_starts(bad) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRequest, match="drift"):
        parse_options({"drift": bad}, "knflow.json")


# -- retraining -------------------------------------------------------------------------------------------------------


def detection(ctx, m: Monitored) -> CloudEvent:  # type: ignore[no-untyped-def]
    return feed(ctx, m, shifted(m.held_out[:WINDOW]))[-1]


def test_drift_starts_one_retraining_run_of_the_newest_raw_data_then_cools_down(ctx, monitored, digits) -> None:  # type: ignore[no-untyped-def]
    ctx.store.put("raw/digits/knflow.json", b"{}")  # the options file is not data
    ctx.store.put("raw/digits/newer.csv", digits_csv(digits))
    detected = detection(ctx, monitored)
    said = retrain.handle(detected, ctx)
    started = ctx.emitted[-1]  # the new run's arrival goes on the side; the answer stays in the drifting run
    assert said.get_type() == RETRAIN_STARTED and runid_of(said) == monitored.runid
    assert said.get_data()["runid"] == runid_of(started)
    assert started.get_type() == DATA_ARRIVED and started.get_extension("pipeline") == "lifecycle"
    assert runid_of(started) not in (None, monitored.runid)
    data = started.get_data()
    assert (data["key"], data["dataset"]) == ("raw/digits/newer.csv", "digits")
    assert data["options"] == parse_options(OPTIONS, "options").to_dict()
    assert data["retrain"] == {
        "run": monitored.runid, "model": "digits", "version": 1, "drift": detected.get_id(), "new_data": True,
    }  # fmt: skip
    assert retrain.handle(detected, ctx).get_id() == said.get_id()  # redelivered: the same run, not a second one
    again = ctx.emitted[-1]
    assert (again.get_id(), runid_of(again)) == (started.get_id(), runid_of(started))
    assert retrain.handle(detection(ctx, monitored), ctx) is None  # a later detection, within the cooldown
    assert len(list(ctx.store.list("drift/digits/retrains/"))) == 1
    assert ingest.handle(started, ctx).get_data()["dataset"] == "digits"  # ingest takes it like any arrival


def test_after_the_cooldown_a_new_detection_retrains_again(ctx, monitored) -> None:  # type: ignore[no-untyped-def]
    from functions.runoptions import save_options

    save_options(
        ctx.store, monitored.runid, parse_options({**OPTIONS, "drift": {"window": WINDOW, "cooldown_s": 0}}, "")
    )
    assert retrain.handle(detection(ctx, monitored), ctx) is not None
    first = ctx.emitted[-1]
    assert retrain.handle(detection(ctx, monitored), ctx) is not None
    second = ctx.emitted[-1]
    assert runid_of(first) != runid_of(second)
    assert first.get_data()["retrain"]["new_data"] is False  # only the data the model was trained on is there


def test_a_detection_delivered_again_after_another_started_a_run_re_announces_its_own(ctx, monitored) -> None:  # type: ignore[no-untyped-def]
    from functions.runoptions import save_options

    save_options(
        ctx.store, monitored.runid, parse_options({**OPTIONS, "drift": {"window": WINDOW, "cooldown_s": 0}}, "")
    )
    first = detection(ctx, monitored)
    said = retrain.handle(first, ctx)  # retrain went down before this answer and the arrival got out
    started = ctx.emitted[-1]
    assert retrain.handle(detection(ctx, monitored), ctx) is not None  # meanwhile another detection started a run
    again = StepContext(store=ctx.store, settings=ctx.settings)
    assert retrain.handle(first, again).get_id() == said.get_id()
    assert [(e.get_id(), runid_of(e)) for e in again.emitted] == [(started.get_id(), runid_of(started))]
    assert len(list(ctx.store.list("drift/digits/retrains/"))) == 2  # not a third run
