"""One trace per run: a tuning run on the real platform exports its spans over OTLP to a receiver in this test, and the
knflow server draws the same run's trace (``/api/runs/{runid}/trace``) and its waterfall without a collector."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from eventing.events import TRACEPARENT, span_id_of
from functions.contract import DATA_ARRIVED, MODEL_TRAINED, TRIAL_REQUESTED
from infra.auth import admin_token_path
from infra.store import open_store
from knflow.commands.demo import DEMO_OPTIONS, digits_npz
from knflow.drive import RunOutcome, submit, watch
from knflow.platform import Platform
from tests.eventually import eventually_sync
from tests.lifecycle.helpers import platform_settings
from tests.otlp import OtlpReceiver

pytestmark = pytest.mark.slow

OPTIONS = {  # the demo's tuning, short: three trials at once, two epochs each
    **DEMO_OPTIONS,
    "model_name": "digits-traced",
    "train": {"model": "cnn", "epochs": 2},
    "tuning": {**DEMO_OPTIONS["tuning"], "maxTrialCount": 3, "parallelTrialCount": 3},
}
STEPS = ("ingest", "featurize", "tune", "train", "register", "deploy")


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, receiver: OtlpReceiver) -> Iterator[Platform]:
    """The platform exporting its spans to ``receiver`` at 100 % sampling, flushed every 200 ms."""
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    with Platform.start(platform_settings(tmp_path_factory.mktemp("platform")), extra_env=env) as running:
        yield running


@pytest.fixture(scope="module")
def run(platform: Platform) -> RunOutcome:
    """A tuning run of three parallel trials, followed to its deployed model."""
    store = open_store(platform.settings.artifacts)
    key = submit(store, "digits", "digits-traced.npz", digits_npz(), OPTIONS)
    outcome = watch(platform.history(), key, timeout=420)
    assert outcome.failure is None, outcome.failure.data if outcome.failure else None
    assert outcome.deployed is not None
    return outcome


def _attributes(span) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {a.key: a.value.string_value or a.value.int_value for a in span.attributes}


def _ancestors(span_id: str, spans: dict) -> list[str]:  # type: ignore[type-arg]
    chain = []
    while span_id in spans and spans[span_id].parent_span_id:
        span_id = spans[span_id].parent_span_id.hex()
        chain.append(span_id)
    return chain


def test_a_tuning_run_is_one_exported_trace_rooted_at_its_data_arrival(run: RunOutcome, receiver: OtlpReceiver) -> None:
    arrival = next(e for e in run.events if e.type == DATA_ARRIVED)
    trace_id, root = arrival.extensions[TRACEPARENT].split("-")[1:3]
    assert {e.extensions[TRACEPARENT].split("-")[1] for e in run.events} == {trace_id}

    def invocations() -> list | None:  # type: ignore[type-arg]
        spans = receiver.of_trace(trace_id)
        found = [s for s in spans.values() if "faas.name" in _attributes(s)]
        steps = {_attributes(s)["faas.name"] for s in found}
        trained = [e for e in run.events if e.type == MODEL_TRAINED]
        rooted = all(root in _ancestors(s.span_id.hex(), spans) for s in found)
        if set(STEPS) <= steps and rooted and all(span_id_of(e.extensions[TRACEPARENT]) in spans for e in trained):
            return found
        return None

    found = eventually_sync(invocations, timeout=30, what="every step's invocation span, descending from the root")
    spans = receiver.of_trace(trace_id)
    runid = arrival.extensions["runid"]
    with receiver._lock:
        of_run = {s.trace_id.hex() for s in receiver.spans if _attributes(s).get("knflow.runid") == runid}
    assert of_run == {trace_id}  # every span of the run is in its one trace
    assert root in spans and not spans[root].parent_span_id  # the data arrival is the root span
    for span in found:
        assert root in _ancestors(span.span_id.hex(), spans), span.name

    # Trials: siblings under tune's invocation; each trial's train invocation descends from its own request.
    requested = [e for e in run.events if e.type == TRIAL_REQUESTED]
    assert len(requested) == 3
    producers = [spans[span_id_of(e.extensions[TRACEPARENT])] for e in requested]
    parents = {p.parent_span_id.hex() for p in producers}
    assert len(parents) == 1
    tune = spans[parents.pop()]
    assert _attributes(tune)["faas.name"] == "tune"
    trial_trains = [s for s in found if _attributes(s)["cloudevents.event_type"] == TRIAL_REQUESTED]
    assert len({_attributes(s)["cloudevents.event_id"] for s in trial_trains}) == 3  # retried ones appear twice
    producer_ids = {p.span_id.hex() for p in producers}
    owners = {next(a for a in _ancestors(s.span_id.hex(), spans) if a in producer_ids) for s in trial_trains}
    assert len(owners) == 3

    # Replies: each trained model's event is a child of a train invocation; each delivery is one span.
    for event in (e for e in run.events if e.type == MODEL_TRAINED):
        parent = spans[spans[span_id_of(event.extensions[TRACEPARENT])].parent_span_id.hex()]
        assert _attributes(parent)["faas.name"] == "train"
    deliveries = [s for s in spans.values() if s.name.startswith("deliver ")]
    assert {_attributes(s)["knflow.trigger"] for s in deliveries} >= {f"lifecycle-{s}" for s in ("ingest", "tune")}
    assert all(200 <= _attributes(s)["http.response.status_code"] < 300 for s in deliveries if not s.events)


def _api_trace(platform: Platform, runid: str) -> dict:  # type: ignore[type-arg]
    answer = requests.get(f"{platform.url('dashboard')}/api/runs/{runid}/trace", headers=platform.headers, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_the_server_draws_the_same_trace_from_the_run_events(platform: Platform, run: RunOutcome) -> None:
    arrival = next(e for e in run.events if e.type == DATA_ARRIVED)
    trace_id, root = arrival.extensions[TRACEPARENT].split("-")[1:3]
    trace = _api_trace(platform, arrival.extensions["runid"])

    assert trace["trace_id"] == trace_id
    spans = {s["span_id"]: s for s in trace["spans"]}
    assert len(spans) == len({e.extensions[TRACEPARENT] for e in run.events})
    assert spans[root]["parent_id"] is None and spans[root]["name"].startswith(DATA_ARRIVED)
    for span in spans.values():
        assert {"span_id", "parent_id", "name", "kind", "start", "end", "status", "attributes"} <= set(span)
        assert span["start"] <= span["end"]
        chain, node = [], span
        while node["parent_id"] is not None:
            node = spans[node["parent_id"]]
            chain.append(node["span_id"])
        assert span["span_id"] == root or chain[-1] == root
    trials = [s for s in spans.values() if s["attributes"]["cloudevents.event_type"] == TRIAL_REQUESTED]
    assert len(trials) == 3 and len({s["parent_id"] for s in trials}) == 1


def test_unknown_run_has_no_trace(platform: Platform) -> None:
    answer = requests.get(f"{platform.url('dashboard')}/api/runs/run-nope/trace", headers=platform.headers, timeout=30)
    assert answer.status_code == 404
    assert "run-nope" in answer.json()["error"]


async def test_the_waterfall_shows_one_bar_per_span_opened_from_the_run(
    platform: Platform, run: RunOutcome, browser
) -> None:  # type: ignore[no-untyped-def]
    runid = run.events[0].extensions["runid"]
    spans = (await asyncio.to_thread(_api_trace, platform, runid))["spans"]
    token = Path(admin_token_path(platform.settings)).read_text().strip()
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(15_000)
    await page.goto(f"{platform.url('dashboard')}/?token={token}")
    await page.goto(f"{platform.url('dashboard')}/#/runs/{runid}")
    await page.locator("#trace-link").click()
    await page.locator("svg.waterfall").wait_for()
    assert await page.locator("svg.waterfall rect.span-bar").count() == len(spans)
    assert await page.locator("svg.waterfall g.span-row").count() == len(spans)
    root = next(s for s in spans if s["parent_id"] is None)
    first = page.locator("svg.waterfall g.span-row").first
    assert await first.get_attribute("data-span-id") == root["span_id"]
    if shots := os.environ.get("KNFLOW_DASHBOARD_SCREENSHOTS"):  # a directory, as tests/dashboard/test_browser.py
        await page.screenshot(path=os.path.join(shots, "trace.png"), full_page=True)
