"""The dashboard's JSON API: clear 4xx for unknown ids, 503 per backend that is down, replay into the real broker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from aiohttp import ClientSession

from eventing.broker import BrokerServer
from eventing.events import STEP_FAILED
from functions.contract import FEATURES_READY
from infra.localservices import free_port
from infra.store import ArtifactStore
from serving.registry import ModelRegistry
from tests.dashboard.conftest import TRAIN_ERROR, Seeded, history, tiny_onnx
from tests.eventually import eventually
from tests.unguarded import UNGUARDED


async def get(http: ClientSession, url: str, method: str = "GET") -> tuple[int, dict]:
    async with http.request(method, url) as response:
        return response.status, await response.json()


async def test_unknown_ids_answer_404_with_the_reason(platform: Seeded, http: ClientSession) -> None:
    base = platform.dashboard.url
    ok_event = (await history(http, platform.broker_url, runid=platform.ok_runid))[0]["id"]
    cases = [
        ("GET", "/api/runs/run-nope", "no run 'run-nope'"),
        ("GET", "/api/models/nope", "model 'nope' is not registered"),
        ("GET", "/api/serving/nope", "'nope' is not deployed"),
        ("POST", "/api/failures/nope/replay", "no dead-lettered event with id 'nope'"),
        ("POST", f"/api/failures/{ok_event}/replay", "no dead-lettered event"),  # exists, never failed
    ]
    for method, path, reason in cases:
        status, body = await get(http, base + path, method)
        assert status == 404, (path, body)
        assert reason in body["error"], (path, body)
    status, body = await get(http, base + "/api/nothing-here")
    assert status == 404 and "error" in body


async def test_each_backend_down_answers_503_on_its_own_paths_only(
    start_dashboard, registry: ModelRegistry, http: ClientSession
) -> None:  # type: ignore[no-untyped-def]
    await asyncio.to_thread(registry.register, "digits", tiny_onnx(), metrics={"test_accuracy": 0.9})
    broker, gateway = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    dashboard = await start_dashboard(broker, gateway)
    for path, who in [("/api/runs", broker), ("/api/runs/r1", broker), ("/api/failures", broker),
                      ("/api/serving", gateway), ("/api/serving/digits", gateway)]:  # fmt: skip
        status, body = await get(http, dashboard.url + path)
        assert status == 503, (path, body)
        assert f"{who} is not reachable" in body["error"], (path, body)
    status, body = await get(http, dashboard.url + "/api/failures/x/replay", "POST")
    assert status == 503
    status, body = await get(http, dashboard.url + "/api/models")
    assert status == 200 and body["models"][0]["versions"][0]["metrics"] == {"test_accuracy": 0.9}


async def test_models_panel_reads_versions_aliases_and_lineage_from_file_and_s3_stores(
    store: ArtifactStore, start_dashboard, http: ClientSession
) -> None:  # type: ignore[no-untyped-def]
    registry = ModelRegistry(store)
    for seed, accuracy in ((0, 0.91), (1, 0.95)):
        await asyncio.to_thread(
            registry.register,
            "digits",
            tiny_onnx(seed),
            metrics={"test_accuracy": accuracy},
            lineage={"run": f"r{seed}"},
        )
    await asyncio.to_thread(registry.set_alias, "digits", "production", 1, actor="test")
    await asyncio.to_thread(registry.set_alias, "digits", "staging", 2, actor="test")
    closed = f"http://127.0.0.1:{free_port()}"
    dashboard = await start_dashboard(closed, closed, store)
    status, body = await get(http, f"{dashboard.url}/api/models/digits")
    assert status == 200, body
    assert body["aliases"] == {"production": 1, "staging": 2} and body["latest"] == 2
    newest, oldest = body["versions"]
    assert (newest["version"], newest["aliases"], newest["metrics"]) == (2, ["staging"], {"test_accuracy": 0.95})
    assert (oldest["aliases"], oldest["lineage"]) == (["production"], {"run": "r0"})
    assert oldest["sha256"] == (await asyncio.to_thread(registry.get, "digits", 1)).sha256
    assert newest["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]


async def test_replay_republishes_the_original_with_a_new_id_and_the_run_shows_both_failures(
    platform: Seeded, http: ClientSession
) -> None:
    url = f"{platform.dashboard.url}/api/failures/{platform.failed_event_id}/replay"
    status, body = await get(http, url, "POST")
    assert status == 202, body
    assert body["replayed"] == platform.failed_event_id and body["runid"] == platform.failing_runid
    ready = await history(http, platform.broker_url, runid=platform.failing_runid, type=FEATURES_READY)
    assert [e["id"] for e in ready] == [platform.failed_event_id, body["id"]]
    assert ready[1]["knflowreplayof"] == platform.failed_event_id and ready[1]["data"] == ready[0]["data"]

    async def failed_twice() -> bool:  # the same crashing subscriber gets the replay and fails it again
        return len(await history(http, platform.broker_url, runid=platform.failing_runid, type=STEP_FAILED)) == 2

    await eventually(failed_twice, what="the replay's own step.failed")
    status, detail = await get(http, f"{platform.dashboard.url}/api/runs/{platform.failing_runid}")
    assert detail["run"]["status"] == "failed" and TRAIN_ERROR in detail["reason"]
    first, second = detail["failures"]
    assert [r["id"] for r in first["replays"]] == [body["id"]] and second["event_id"] == body["id"]
    assert [e["replay_of"] for e in detail["timeline"] if e["replay_of"]] == [platform.failed_event_id]


async def test_runs_list_both_runs_with_their_status_and_duration(platform: Seeded, http: ClientSession) -> None:
    status, body = await get(http, f"{platform.dashboard.url}/api/runs")
    assert status == 200
    rows = {r["runid"]: r for r in body["runs"]}
    assert rows[platform.ok_runid]["status"] == "succeeded" and rows[platform.ok_runid]["step"] == "done"
    assert rows[platform.failing_runid]["status"] == "failed" and rows[platform.failing_runid]["dataset"] == "iris"
    assert rows[platform.failing_runid]["duration_s"] > 0  # the broker's retry took real time


@pytest.mark.timeout(60)
async def test_python_m_knflow_dashboard_serves_the_page(tmp_path, broker: BrokerServer, http: ClientSession) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    env = {**os.environ, "KNFLOW_DATA_DIR": str(tmp_path), "KNFLOW_DASHBOARD_PORT": str(port),
           "KNFLOW_BROKER_PORT": str(broker.port), "KNFLOW_LOG_FORMAT": "text", **UNGUARDED}  # fmt: skip
    process = subprocess.Popen([sys.executable, "-m", "knflow.dashboard"], env=env, stderr=subprocess.PIPE)
    try:

        async def answered() -> tuple | None:
            try:
                return await get(http, f"http://127.0.0.1:{port}/api/runs")
            except OSError:
                assert process.poll() is None, process.stderr.read().decode()
                return None

        status, body = await eventually(answered, 30, "the dashboard process to answer")
        assert status == 200 and body == {"runs": [], "broker": broker.url}
        async with http.get(f"http://127.0.0.1:{port}/") as response:
            assert response.status == 200 and "knflow dashboard" in await response.text()
    finally:
        process.terminate()
        assert process.wait(10) == 0


async def test_a_cursor_the_broker_refuses_answers_400_with_the_broker_s_reason(
    start_dashboard, broker: BrokerServer, http: ClientSession
) -> None:  # type: ignore[no-untyped-def]
    dashboard = await start_dashboard(broker.url, f"http://127.0.0.1:{free_port()}")
    status, body = await get(http, f"{dashboard.url}/api/runs/run-x/events?after=soon")
    assert status == 400, body  # the caller's bad input, not a backend that is down
    assert "cursor 'soon' is not" in body["error"], body
