"""The dead-letter function turns a Knative dead letter into the step.failed event knflow's broker would publish."""

from __future__ import annotations

import base64

from eventing.bindings import to_http_binary
from eventing.broker import BrokerServer
from eventing.events import STEP_FAILED, new_event
from functions.contract import TRIAL_REQUESTED
from functions.tune import failed_trial, trial_event_id
from tests.functions.conftest import make_settings


def _dead_letter(runid: str) -> object:
    extensions = {
        "id": trial_event_id(runid, "t3"),
        "knativeerrordest": "http://knflow-train.knflow.svc.cluster.local",
        "knativeerrorcode": "500",
        "knativeerrordata": base64.b64encode(b"out of memory").decode(),
    }
    return new_event(TRIAL_REQUESTED, "/knflow/functions/tune", {"trial": "t3"}, runid=runid, extensions=extensions)


async def _post(http, url: str, event) -> int:
    headers, body = to_http_binary(event)
    async with http.post(url, data=body, headers=headers) as response:
        return response.status


async def test_dead_letter_becomes_step_failed_that_tune_counts(tmp_path, start_host, http):
    settings = make_settings(tmp_path, broker=f"embedded://{tmp_path / 'events'}")
    async with BrokerServer(settings, port=0) as broker:
        url = await start_host("deadletter", sink=broker.url)
        event = _dead_letter("run-dl")
        assert await _post(http, url, event) == 204
        assert await _post(http, url, event) == 204  # redelivered dead letter: same step.failed id
        query = f"{broker.url.rstrip('/')}/events?type={STEP_FAILED}&runid=run-dl&wait=10"
        async with http.get(query) as response:
            events = (await response.json())["events"]
    assert len(events) == 2 and events[0]["id"] == events[1]["id"]
    data = events[0]["data"]
    assert data["event_id"] == "run-dl.t3" and data["event_type"] == TRIAL_REQUESTED
    assert (data["status"], data["error"]) == (500, "out of memory")
    assert data["subscriber"] == "http://knflow-train.knflow.svc.cluster.local"
    assert failed_trial("run-dl", data)["trial"] == "t3"


async def test_a_dead_lettered_step_failed_is_not_reported_again(tmp_path, start_host, http):
    settings = make_settings(tmp_path, broker=f"embedded://{tmp_path / 'events'}")
    async with BrokerServer(settings, port=0) as broker:
        url = await start_host("deadletter", sink=broker.url)
        assert await _post(http, url, new_event(STEP_FAILED, "/x", {"event_id": "e"}, runid="run-x")) == 204
        async with http.get(f"{broker.url.rstrip('/')}/events?runid=run-x") as response:
            assert (await response.json())["events"] == []
