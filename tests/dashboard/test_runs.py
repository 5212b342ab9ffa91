"""How the dashboard reads runs from events: status, current step, steps, trials, failure reason, replay events."""

from __future__ import annotations

from cloudevents.core.v1.event import CloudEvent

from bench.dashboard.lifecycle_events import start_of_run, trained
from eventing.delivery import Attempt, step_failed_event
from eventing.events import new_event
from eventing.triggers import Trigger
from functions.contract import MODEL_REGISTERED, MODEL_TRAINED
from knflow.dashboard import runs
from knflow.dashboard.replay import replay_event


def failed(event: CloudEvent, trigger: str, error: bytes = b"boom", attempts: int = 3) -> CloudEvent:
    """The step.failed the broker's delivery publishes when ``event`` cannot be delivered to ``trigger``."""
    return step_failed_event(
        Trigger(trigger, f"http://127.0.0.1:9/{trigger}"), event, Attempt(500, error), attempts, None
    )


def test_a_failed_trial_does_not_fail_the_run_and_shows_in_the_trials() -> None:
    events = start_of_run("digits", "tune")
    (req0, res0), (req1, _) = trained(events[-1], "trial-0000", 0.9, 0.01), trained(events[-1], "trial-0001", 0.8, 0.1)
    events += [req0, req1, res0, failed(req1, "train", b"worker died")]
    assert runs.run_status(events) == runs.RUNNING
    assert runs.summarize("r", events).step == "tune"
    rows = {t["trial"]: t for t in runs.trials(events)}
    assert rows["trial-0000"]["status"] == "Succeeded" and rows["trial-0000"]["value"] == 0.9
    assert rows["trial-0001"]["status"] == "Failed" and rows["trial-0001"]["reason"] == "worker died"


def test_a_deploy_that_fails_after_registration_fails_the_run_at_deploy() -> None:
    events = start_of_run("digits", "train")
    model = new_event(
        MODEL_TRAINED, "/t", {"status": "Succeeded", "metrics": {}}, cause=events[-1], extensions={"mode": "train"}
    )
    registered = new_event(MODEL_REGISTERED, "/r", {"name": "digits", "version": 2}, cause=model)
    events += [model, registered]
    assert runs.run_status(events) == runs.SUCCEEDED
    events.append(failed(registered, "deploy-on-register", b"gateway unreachable", attempts=4))
    summary = runs.summarize("r", events)
    assert (summary.status, summary.step, summary.model) == (runs.FAILED, "deploy", "digits v2")
    steps = {s.step: s.status for s in runs.steps(events)}
    assert steps == {
        "ingest": "succeeded",
        "featurize": "succeeded",
        "train": "succeeded",
        "register": "succeeded",
        "deploy": "failed",
    }
    assert runs.failure_reason(events).endswith("after 4 attempt(s): status 500: gateway unreachable")


def test_a_training_that_reports_failed_fails_the_run() -> None:
    events = start_of_run("digits", "train")
    events.append(
        new_event(
            MODEL_TRAINED,
            "/t",
            {"status": "Failed", "reason": "loss diverged"},
            cause=events[-1],
            extensions={"mode": "train"},
        )
    )
    assert runs.run_status(events) == runs.FAILED
    assert runs.failure_reason(events) == "training failed: loss diverged"
    assert [s.status for s in runs.steps(events)][-1] == "failed"


def test_a_replay_keeps_the_original_but_its_id_and_puts_the_run_back_to_running() -> None:
    events = start_of_run("digits", "train")
    events.append(failed(events[-1], "train"))
    assert runs.run_status(events) == runs.FAILED
    original = events[2]
    replay = replay_event(original)
    assert replay.get_id() != original.get_id()
    assert replay.get_extension(runs.REPLAY_OF) == original.get_id()
    for attribute in ("type", "source", "runid", "mode", "datacontenttype"):
        assert replay.get_attributes()[attribute] == original.get_attributes()[attribute]
    assert replay.get_data() == original.get_data()
    assert replay.get_extension("traceparent").split("-")[1] == original.get_extension("traceparent").split("-")[1]
    assert runs.run_status([*events, replay]) == runs.RUNNING
    assert [s.status for s in runs.steps([*events, replay])][-1] == "running"
    again = failed(replay, "train", b"still broken")
    assert [s.status for s in runs.steps([*events, replay, again])][-1] == "failed"
    assert runs.failure_reason([*events, replay, again]).endswith("still broken")
    assert runs.timeline([replay])[0]["replay_of"] == original.get_id()


def test_a_run_of_another_pipeline_shows_that_pipelines_steps_in_its_order() -> None:
    from knflow.pipeline import Pipeline

    spec = (
        Pipeline.lifecycle("validated")
        .insert_between("ingest", "featurize", name="validate", function="echo", emits="acme.dataset.validated")
        .spec()
    )
    view = runs.PipelineView(spec)
    arrived, ingested, ready = start_of_run("digits", "train")
    validated = new_event("acme.dataset.validated", "/v", ingested.get_data(), cause=ingested)
    ready = new_event(
        ready.get_type(), ready.get_source(), ready.get_data(), cause=validated, extensions={"mode": "train"}
    )
    rows = runs.steps([arrived, ingested, validated, ready], view=view)
    assert [(r.step, r.status) for r in rows] == [
        ("ingest", "succeeded"), ("validate", "succeeded"), ("featurize", "succeeded"), ("train", "running"),
    ]  # fmt: skip
    assert runs.summarize("r", [arrived, ingested], view=view).step == "validate"
    assert runs.summarize("r", [arrived, ingested], view=runs.PipelineView.lifecycle()).step == "featurize"
