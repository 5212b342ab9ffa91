"""The local runner: routing to per-function worker processes, scale to zero, crash restart, start timeout."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from eventing.bindings import to_http_binary
from eventing.events import new_event
from functions.runtime.instances import Instance, instances_path, load_instances
from functions.runtime.runner import Runner
from infra.errors import InvalidRequest
from infra.localservices import free_port, wait_for_port
from tests.eventually import eventually
from tests.functions.conftest import FIXTURES, make_settings, post_event
from tests.processes import alive
from tests.scrape import scrape, value

ROOT = Path(__file__).parents[2]
FUNCTIONS = {
    "behaviours": str(FIXTURES / "behaviours.py"),
    "slow": str(FIXTURES / "slow_import.py"),
    "ghost": "functions.no_such_step",
}


@pytest.fixture
async def start_runner(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    runners: list[Runner] = []

    async def start(**env: str) -> Runner:
        runner = Runner(make_settings(tmp_path, **env), FUNCTIONS)
        await runner.start(0)
        runners.append(runner)
        return runner

    yield start
    for runner in runners:
        await runner.stop()


async def status_of(http: aiohttp.ClientSession, runner: Runner) -> dict:
    async with http.get(f"http://127.0.0.1:{runner.port}/functions") as response:
        return await response.json()


async def test_event_is_routed_to_its_function_in_its_own_process(start_runner, http):
    runner = await start_runner()
    status, _, body = await post_event(http, runner.url("behaviours"), "test.hello")
    assert status == 200
    worker_pid = orjson.loads(body)["pid"]
    assert worker_pid != os.getpid()
    status, _, body = await post_event(http, f"http://127.0.0.1:{runner.port}/echo", "test.x", {"k": 1})
    assert (status, orjson.loads(body)) == (200, {"k": 1})
    state = await status_of(http, runner)
    assert state["behaviours"]["state"] == "running"
    assert state["behaviours"]["pid"] == worker_pid
    assert state["behaviours"]["last_event"] is not None
    assert state["train"]["state"] == "stopped"


async def test_events_for_a_stopped_function_wait_while_it_starts(start_runner, http):
    runner = await start_runner()
    results = await asyncio.gather(*(post_event(http, runner.url("behaviours"), "test.hi") for _ in range(8)))
    assert [r[0] for r in results] == [200] * 8
    assert len({orjson.loads(r[2])["pid"] for r in results}) == 1


async def test_idle_worker_scales_to_zero_and_the_next_event_starts_one(start_runner, http):
    runner = await start_runner(functions_idle_grace_s="0.3")
    status, _, body = await post_event(http, runner.url("behaviours"))
    assert status == 200
    first_pid = orjson.loads(body)["pid"]
    await eventually(lambda: runner.status()["behaviours"]["state"] == "stopped")
    await eventually(lambda: not alive(first_pid), timeout=5)
    assert (await status_of(http, runner))["behaviours"]["pid"] is None
    status, _, body = await post_event(http, runner.url("behaviours"))
    assert status == 200
    assert orjson.loads(body)["pid"] != first_pid


async def test_crashed_worker_is_restarted_and_handles_the_next_event(start_runner, http):
    runner = await start_runner()
    status, _, body = await post_event(http, runner.url("behaviours"))
    first_pid = orjson.loads(body)["pid"]
    status, _, body = await post_event(http, runner.url("behaviours"), "test.crash")
    assert status == 502  # the broker redelivers it
    assert "dropped the event" in orjson.loads(body)["error"]
    await eventually(lambda: runner.status()["behaviours"]["restarts"] == 1)
    await eventually(lambda: runner.status()["behaviours"]["state"] == "running")
    assert not alive(first_pid)
    status, _, body = await post_event(http, runner.url("behaviours"))
    assert status == 200
    assert orjson.loads(body)["pid"] not in (first_pid, None)


async def test_function_that_does_not_start_in_time_gets_503(start_runner, http):
    runner = await start_runner(functions_start_timeout_s="0.5")
    started = time.monotonic()
    status, headers, body = await post_event(http, runner.url("slow"))
    assert status == 503
    assert time.monotonic() - started < 3
    assert headers["Retry-After"] == "1"
    assert "did not start within" in orjson.loads(body)["error"]


async def test_unknown_function_gets_404_naming_the_known_ones(start_runner, http):
    runner = await start_runner()
    status, _, body = await post_event(http, runner.url("nope"))
    assert status == 404
    assert "behaviours" in orjson.loads(body)["error"]


async def test_function_whose_module_is_missing_reports_why(start_runner, http):
    runner = await start_runner()
    status, _, body = await post_event(http, runner.url("ghost"))
    assert status == 503
    assert "no module" in orjson.loads(body)["error"]
    assert runner.status()["ghost"]["state"] == "failed"


async def test_runner_process_serves_and_leaves_no_worker_behind_on_sigterm(tmp_path, http):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KNFLOW_DATA_DIR": str(tmp_path), "KNFLOW_FUNCTIONS_PORT": str(port)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "functions.runtime.runner", f"behaviours={FIXTURES / 'behaviours.py'}", env=env
    )
    try:
        await asyncio.to_thread(wait_for_port, port, 30)
        status, _, body = await post_event(http, f"http://127.0.0.1:{port}/functions/behaviours")
        assert status == 200
        worker_pid = orjson.loads(body)["pid"]
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        await eventually(lambda: not alive(worker_pid), timeout=5)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_events_racing_the_scale_down_are_all_delivered(start_runner, http):
    runner = await start_runner(functions_idle_grace_s="0.05")
    statuses, pids = [], set()
    for i in range(40):
        status, _, body = await post_event(http, runner.url("behaviours"))
        statuses.append(status)
        if status == 200:
            pids.add(orjson.loads(body)["pid"])
        await asyncio.sleep(0.02 + (i % 5) * 0.015)  # gaps just below, at and above the grace
    assert statuses == [200] * 40
    assert len(pids) > 1  # it did scale down (and back up) in between


# -- hosted instances: forked from the template, or under an interpreter of their own ------------------------------

OWN = {"forked": None, "own interpreter": sys.executable}


@pytest.mark.parametrize("python", OWN.values(), ids=OWN.keys())
async def test_hosted_instance_starts_answers_and_is_kept(start_runner, http, tmp_path, python):
    runner = await start_runner()
    await runner.host("hosted", Instance(target=str(FIXTURES / "behaviours.py"), env={"A": "1"}, python=python))
    status, _, body = await post_event(http, runner.url("hosted"))
    assert status == 200
    pid = orjson.loads(body)["pid"]
    assert (runner.status()["hosted"]["pid"], runner.status()["hosted"]["python"]) == (pid, python)
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert (b"--worker" in cmdline) == (python is not None)  # its own process, not a fork of the template
    assert load_instances(instances_path(runner.settings.data_dir))["hosted"].python == python


async def test_own_interpreter_worker_scales_to_zero_and_restarts_after_a_crash(start_runner, http):
    runner = await start_runner(functions_idle_grace_s="0.3")
    await runner.host("own", Instance(target=str(FIXTURES / "behaviours.py"), python=sys.executable))
    status, _, body = await post_event(http, runner.url("own"))
    first = orjson.loads(body)["pid"]
    await eventually(lambda: runner.status()["own"]["state"] == "stopped", what="idle stop")
    await eventually(lambda: not alive(first), timeout=5, what="the idle worker to exit")
    status, _, body = await post_event(http, runner.url("own"))
    assert status == 200 and orjson.loads(body)["pid"] != first
    status, _, body = await post_event(http, runner.url("own"), "test.crash")
    assert status == 502
    await eventually(lambda: runner.status()["own"]["restarts"] == 1, what="a restart")
    status, _, _ = await post_event(http, runner.url("own"))
    assert status == 200


async def test_instance_with_a_missing_interpreter_is_refused_with_the_reason(start_runner):
    runner = await start_runner()
    with pytest.raises(InvalidRequest, match=r"cannot be hosted: .*no/such/python"):
        await runner.host("lost", Instance(target="echo", python="/no/such/python"))
    assert "lost" not in runner.status()


async def test_an_instance_follows_its_function_when_that_is_hosted_again(start_runner, http):
    runner = await start_runner()
    first, second = str(FIXTURES / "behaviours.py"), "functions.examples.echo"
    await runner.host("fn", Instance(target=first))
    await runner.host("fn-step", Instance(target=first, function="fn", env={"KNFLOW_STEP_SETTINGS": "{}"}))
    await runner.host("fn", Instance(target=second, python=sys.executable))
    assert runner.status()["fn-step"]["module"] == second
    assert runner.status()["fn-step"]["python"] == sys.executable
    status, _, body = await post_event(http, runner.url("fn-step"), "test.x", {"k": 2})
    assert (status, orjson.loads(body)) == (200, {"k": 2})


async def test_metrics_count_invocations_by_outcome_cold_starts_and_workers(start_runner, http):
    runner = await start_runner(functions_idle_grace_s="2")  # long enough not to scale down between the events
    base = f"http://127.0.0.1:{runner.port}"
    before = await scrape(http, base)
    assert value(before, "knflow_function_workers", function="behaviours") == 0
    for kind in ("test.hello", "test.hello", "test.invalid", "test.boom"):
        await post_event(http, runner.url("behaviours"), kind)
    await post_event(http, f"{base}/functions/nope", "test.hello")  # no such function: not a label value
    s = await scrape(http, base)
    assert value(s, "knflow_function_invocations_total", function="behaviours", outcome="ok") == 2
    assert value(s, "knflow_function_invocations_total", function="behaviours", outcome="refused") == 1
    assert value(s, "knflow_function_invocations_total", function="behaviours", outcome="failed") == 1
    assert not any(dict(labels).get("function") == "nope" for _, labels in s)
    assert value(s, "knflow_function_duration_seconds_count", function="behaviours") == 4
    assert value(s, "knflow_function_cold_starts_total", function="behaviours") == 1
    assert value(s, "knflow_function_workers", function="behaviours") == 1
    await eventually(lambda: runner.status()["behaviours"]["state"] == "stopped")  # scaled to zero
    assert value(await scrape(http, base), "knflow_function_workers", function="behaviours") == 0
    assert (await post_event(http, runner.url("behaviours"), "test.hello"))[0] == 200
    s = await scrape(http, base)
    assert value(s, "knflow_function_cold_starts_total", function="behaviours") == 2
    assert value(s, "knflow_function_invocations_total", function="behaviours", outcome="ok") == 3


async def test_a_delivery_is_answered_alike_on_the_lean_path_and_on_aiohttp(start_runner, http):
    """A POST with a Content-Length takes the runner's lean HTTP/1.1 path; a chunked one goes to aiohttp."""
    runner = await start_runner()
    event = new_event("test.x", "/tests", {"k": 1})
    headers, body = to_http_binary(event)

    async def chunked():
        yield body

    answers = []
    for data in (body, chunked()):
        async with http.post(runner.url("echo"), data=data, headers=headers) as response:
            kept = {k.lower(): v for k, v in response.headers.items() if k.lower().startswith("ce-")}
            answers.append((response.status, response.headers.get("Content-Type"), kept, await response.read()))
        lean = runner._lean.connections if runner._lean is not None else set()
        assert bool(lean) == (data is body)  # the chunked POST's connection went over to aiohttp
    assert answers[0][0] == 200 and orjson.loads(answers[0][3]) == {"k": 1}
    assert [a[:2] for a in answers] == [answers[0][:2]] * 2
    assert answers[0][2]["ce-type"] == answers[1][2]["ce-type"] == "dev.knflow.echo.reply"
    for data in (body, chunked()):
        async with http.post(f"http://127.0.0.1:{runner.port}/functions/nope", data=data, headers=headers) as r:
            assert (r.status, r.content_type) == (404, "application/json")
            assert "no function named 'nope'" in (await r.json())["error"]
