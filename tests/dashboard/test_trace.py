"""A run's trace drawn from its events alone (``knflow.dashboard.traces.run_trace``), with tracing off."""

from __future__ import annotations

from eventing.delivery import Attempt, step_failed_event
from eventing.events import TRACEPARENT, new_event, span_id_of
from eventing.triggers import Trigger
from functions.contract import DATA_ARRIVED, FEATURES_READY, MODEL_TRAINED, TRIAL_REQUESTED
from knflow.dashboard.traces import run_trace


def _tree():  # type: ignore[no-untyped-def]
    arrived = new_event(DATA_ARRIVED, "/test", {"key": "raw/d/x.csv"})
    features = new_event(FEATURES_READY, "/featurize", {"dataset": "d"}, cause=arrived)
    trials = [new_event(TRIAL_REQUESTED, "/tune", {"trial": f"t{i}"}, cause=features) for i in range(3)]
    trained = [new_event(MODEL_TRAINED, "/train", {"trial": f"t{i}"}, cause=t) for i, t in enumerate(trials)]
    failed = step_failed_event(Trigger("train", "http://127.0.0.1:9/"), trials[0], Attempt(500, b"boom"), 3, None)
    return arrived, features, trials, trained, failed


def test_events_become_a_tree_rooted_at_the_data_arrival_with_trials_as_siblings() -> None:
    arrived, features, trials, trained, failed = _tree()
    trace = run_trace([arrived, features, *trials, *trained, failed])

    spans = {s["span_id"]: s for s in trace["spans"]}
    assert trace["trace_id"] == arrived.get_extension(TRACEPARENT).split("-")[1]
    assert len(spans) == 9
    root = spans[span_id_of(arrived.get_extension(TRACEPARENT))]
    assert root["parent_id"] is None
    assert root["end"] == max(s["end"] for s in spans.values())  # the data arrival spans the run
    trial_spans = [spans[span_id_of(t.get_extension(TRACEPARENT))] for t in trials]
    assert {s["parent_id"] for s in trial_spans} == {span_id_of(features.get_extension(TRACEPARENT))}
    for trial, model in zip(trials, trained, strict=True):
        span = spans[span_id_of(model.get_extension(TRACEPARENT))]
        assert span["parent_id"] == span_id_of(trial.get_extension(TRACEPARENT))
        assert span["start"] == trial.get_time().timestamp() and span["end"] == model.get_time().timestamp()


def test_a_failed_delivery_is_an_error_span_with_its_attempts() -> None:
    _, _, trials, _, failed = _tree()
    span = next(s for s in run_trace([*trials, failed])["spans"] if s["status"] == "error")
    assert span["parent_id"] == span_id_of(trials[0].get_extension(TRACEPARENT))
    assert span["attributes"]["knflow.attempts"] == 3 and span["attributes"]["knflow.status"] == 500
    assert span["attributes"]["knflow.trigger"] == "train"


def test_a_run_without_traceparents_has_an_empty_trace() -> None:
    assert run_trace([]) == {"trace_id": None, "spans": []}
