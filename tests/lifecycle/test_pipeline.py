"""The default pipeline (functions/lifecycle.yaml) routes each event of the contract to the step that takes it,
only within its own pipeline, and each step loads under the function host."""

from __future__ import annotations

import inspect

import pytest

from eventing.events import STEP_FAILED, new_event
from eventing.filters import matches
from functions import contract
from functions.runtime.loader import NativeFunction, load_function
from functions.runtime.pipeline import load_pipeline, pipeline_triggers

SPEC = load_pipeline(contract.lifecycle_spec_path())
TRIGGERS = pipeline_triggers(SPEC, lambda step: f"http://127.0.0.1:8181/functions/{step.function}")


def _takers(type_: str, pipeline: str = contract.LIFECYCLE, **extensions: str) -> set[str]:
    event = new_event(type_, "/test", {}, extensions={"pipeline": pipeline, **extensions})
    return {t.subscriber.rsplit("/", 1)[-1] for t in TRIGGERS if matches(event, t.filter, t.filters)}


@pytest.mark.parametrize(
    ("type_", "extensions", "steps"),
    [
        (contract.DATA_ARRIVED, {}, {"ingest"}),
        (contract.DATASET_INGESTED, {}, {"featurize"}),
        (contract.FEATURES_READY, {"mode": "train"}, {"train"}),
        (contract.FEATURES_READY, {"mode": "tune"}, {"tune"}),
        (contract.TRIAL_REQUESTED, {"mode": "trial"}, {"train"}),
        (contract.MODEL_TRAINED, {"mode": "trial"}, {"tune"}),
        (contract.MODEL_TRAINED, {"mode": "train"}, {"register"}),
        (contract.TUNE_COMPLETED, {}, {"register"}),
        (contract.MODEL_REGISTERED, {}, {"deploy"}),
        (contract.MODEL_DEPLOYED, {}, set()),
        (contract.INFERENCE_REQUEST, {}, {"drift"}),
        (contract.INFERENCE_RESPONSE, {}, set()),
        (contract.DRIFT_DETECTED, {}, {"retrain"}),
        (STEP_FAILED, {}, {"tune"}),
    ],
)
def test_each_event_reaches_exactly_its_steps(type_: str, extensions: dict[str, str], steps: set[str]) -> None:
    assert _takers(type_, **extensions) == steps


@pytest.mark.parametrize("pipeline", ["other", ""])
def test_events_of_another_pipeline_reach_no_lifecycle_step(pipeline: str) -> None:
    assert _takers(contract.DATA_ARRIVED, pipeline=pipeline) == set()
    assert _takers(contract.MODEL_REGISTERED, pipeline=pipeline) == set()


def test_long_steps_get_a_long_delivery_timeout() -> None:
    timeouts = {t.subscriber.rsplit("/", 1)[-1]: t.delivery.timeout for t in TRIGGERS}  # type: ignore[union-attr]
    assert timeouts["train"] >= 600 and timeouts["tune"] >= 600 and timeouts["ingest"] <= 300


@pytest.mark.parametrize("name", sorted({step.function for step in SPEC.steps}))
def test_every_step_loads_under_the_function_host(name: str) -> None:
    function = load_function(name)
    assert isinstance(function, NativeFunction)
    hook = getattr(function.module, "start", None)
    if hook is not None:  # the host calls start(settings): a step must not shadow the hook's name
        required = [p for p in inspect.signature(hook).parameters.values() if p.default is inspect.Parameter.empty]
        assert len(required) == 1
