"""Experiments and comparison on the knflow server: ``GET /api/runs`` filters, ``GET /api/compare`` over runs and
trials whose events went through the real broker."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from aiohttp import ClientSession
from cloudevents.core.v1.event import CloudEvent

from bench.dashboard.lifecycle_events import SHA, start_of_run, tuned_run
from eventing.broker import BrokerServer
from eventing.client import publish_async
from eventing.events import new_event, new_runid
from functions.contract import MODEL_REGISTERED, MODEL_TRAINED
from functions.runoptions import parse_options
from infra.errors import InvalidRequest
from infra.localservices import free_port
from serving.registry import ModelCard


@dataclass(frozen=True)
class Runs:
    url: str  # the knflow server
    baseline: str  # trained once, lr 0.01, experiment "baseline" named in the submitted options
    wider: str  # trained once, lr 0.003, experiment "wider" as ingest reports it
    tuned: str  # two trials, experiment by default (its data set, digits)


def _with_data(event: CloudEvent, **data: object) -> CloudEvent:
    return CloudEvent(event.get_attributes(), {**(event.get_data() or {}), **data})


def trained_once(
    runid: str, lr: float, accuracy: float, version: int, arrived: dict | None = None, ingested: dict | None = None
) -> list[CloudEvent]:
    """A run that trained one model and registered it; ``arrived``/``ingested``: data added to those events."""
    first, second, ready = start_of_run("digits", "train", runid)
    first, second = _with_data(first, **(arrived or {})), _with_data(second, **(ingested or {}))
    metrics = {"test_accuracy": accuracy, "val_accuracy": accuracy + 0.01}
    model = {"trial": None, "status": "Succeeded", "model_name": "digits", "sha256": SHA, "metrics": metrics,
             "params": {"lr": lr, "epochs": 5}}  # fmt: skip
    trained = new_event(MODEL_TRAINED, "/knflow/functions/train", model, cause=ready, extensions={"mode": "train"})
    registered = new_event(
        MODEL_REGISTERED, "/knflow/functions/register",
        {"name": "digits", "version": version, "metrics": model["metrics"], "params": model["params"]}, cause=trained,
    )  # fmt: skip
    return [first, second, ready, trained, registered]


@pytest.fixture
async def runs(broker: BrokerServer, start_dashboard, http: ClientSession) -> Runs:  # type: ignore[no-untyped-def]
    ids = Runs("", new_runid(), new_runid(), new_runid())
    card = ModelCard("digits", 3, SHA, 1000, "models/digits/3/model.onnx", (), (), {"test_accuracy": 0.95},
                     {"lr": 0.003}, {}, "2026-01-01T00:00:00Z")  # fmt: skip
    events = [
        *trained_once(ids.baseline, 0.01, 0.91, 1, arrived={"options": {"experiment": "baseline"}}),
        *trained_once(ids.wider, 0.003, 0.95, 2, ingested={"experiment": "wider"}),
        *tuned_run(ids.tuned, card, "http://127.0.0.1:1/v2/models/digits/infer"),
    ]
    for event in events:
        await publish_async(broker.url, event)
    closed = f"http://127.0.0.1:{free_port()}"
    dashboard = await start_dashboard(broker.url, closed)
    return Runs(dashboard.url, ids.baseline, ids.wider, ids.tuned)


async def get(http: ClientSession, url: str) -> tuple[int, dict]:
    async with http.get(url) as response:
        return response.status, await response.json()


async def test_runs_list_filters_by_experiment_dataset_and_status(runs: Runs, http: ClientSession) -> None:
    status, body = await get(http, f"{runs.url}/api/runs")
    assert status == 200
    assert {r["runid"]: r["experiment"] for r in body["runs"]} == {
        runs.baseline: "baseline",
        runs.wider: "wider",
        runs.tuned: "digits",
    }
    for query, expected in [
        ("experiment=baseline", {runs.baseline}),
        ("experiment=wider", {runs.wider}),
        ("experiment=digits&status=succeeded", {runs.tuned}),
        ("dataset=digits", {runs.baseline, runs.wider, runs.tuned}),
        ("dataset=iris", set()),
        ("status=failed", set()),
    ]:
        status, body = await get(http, f"{runs.url}/api/runs?{query}")
        assert status == 200 and {r["runid"] for r in body["runs"]} == expected, query
    status, body = await get(http, f"{runs.url}/api/runs?status=done")
    assert status == 400 and "'done' is none of running, succeeded, failed" in body["error"]


async def test_compare_two_runs_lists_the_params_and_metrics_that_differ(runs: Runs, http: ClientSession) -> None:
    status, body = await get(http, f"{runs.url}/api/compare?runs={runs.baseline},{runs.wider}")
    assert status == 200, body
    first, second = body["items"]
    assert (first["id"], first["trial"], first["experiment"], first["status"]) == (
        runs.baseline,
        None,
        "baseline",
        "succeeded",
    )
    assert first["params"] == {"lr": 0.01, "epochs": 5} and second["params"] == {"lr": 0.003, "epochs": 5}
    assert first["metrics"]["test_accuracy"] == 0.91 and first["model"] == {"name": "digits", "version": 1}
    assert first["data"] == {"dataset": "digits", "key": "raw/digits/d.csv", "version": SHA, "rows": 1797}
    assert first["trials"] == 0 and second["experiment"] == "wider"
    assert body["differs"] == ["params.lr", "metrics.test_accuracy", "metrics.val_accuracy"]


async def test_compare_trials_of_one_run_and_a_tuned_run_against_a_trained_one(runs: Runs, http: ClientSession) -> None:
    url = f"{runs.url}/api/compare?runs={runs.tuned}/trial-0000,{runs.tuned}/trial-0001"
    status, body = await get(http, url)
    assert status == 200, body
    worse, best = body["items"]
    assert (worse["id"], worse["runid"], worse["trial"]) == (f"{runs.tuned}/trial-0000", runs.tuned, "trial-0000")
    assert worse["params"] == {"lr": 0.01} and best["metrics"]["val_accuracy"] == 0.96
    assert (worse["model"], best["model"]) == (None, {"name": "digits", "version": 3})
    assert (worse["status"], best["trials"]) == ("Succeeded", 2)
    assert body["differs"] == ["params.lr", "metrics.test_accuracy", "metrics.val_accuracy"]
    status, body = await get(http, f"{runs.url}/api/compare?runs={runs.tuned},{runs.baseline}")
    tuned = body["items"][0]
    assert tuned["params"] == {"lr": 0.003} and tuned["metrics"]["test_accuracy"] == 0.95  # the registered model's
    assert "params.epochs" in body["differs"]  # absent from the tuned run's best trial: different
    assert not any(key.startswith("data.") for key in body["differs"])


async def test_compare_refuses_unknown_runs_and_bad_lists_with_the_reason(runs: Runs, http: ClientSession) -> None:
    for query, reason in [
        (f"{runs.baseline},run-nope", "no run 'run-nope' in the broker history"),
        (f"{runs.baseline},{runs.tuned}/trial-9999", f"run {runs.tuned!r} has no trial 'trial-9999'"),
    ]:
        status, body = await get(http, f"{runs.url}/api/compare?runs={query}")
        assert status == 404 and reason in body["error"], (query, body)
    for query, reason in [
        ("", "compare needs runs=RUN,RUN"),
        (f"runs={runs.baseline}", "compare takes 2 to 20 runs or trials, not 1"),
        (f"runs={runs.baseline},,{runs.wider}", "has an empty item"),
        (f"runs={runs.baseline},{runs.baseline}", f"{runs.baseline!r} is listed more than once"),
        (f"runs={runs.baseline},{runs.tuned}/a/b", "is neither a run id nor RUNID/TRIAL"),
        ("runs=" + ",".join(f"r{i}" for i in range(21)), "not 21"),
    ]:
        status, body = await get(http, f"{runs.url}/api/compare?{query}")
        assert status == 400 and reason in body["error"], (query, body)


def test_experiment_option_is_a_name() -> None:
    assert parse_options({"experiment": "lr sweep 2"}, "options").experiment == "lr sweep 2"
    for bad in ("", " padded", 7, "x" * 201):
        with pytest.raises(InvalidRequest, match="experiment must be a name"):
            parse_options({"experiment": bad}, "options")
