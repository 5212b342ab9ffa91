"""A run's log lines on the knflow server: ``GET /api/runs/{runid}/logs`` over the function runner's log file, in
knflow's JSON and text formats, by step, after a cursor, and long-polled."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest
from aiohttp import ClientSession

from bench.dashboard.lifecycle_events import start_of_run
from eventing.broker import BrokerServer
from eventing.client import publish_async
from eventing.events import new_runid
from infra.localservices import free_port
from infra.settings import Settings
from knflow.dashboard.runlogs import log_path, read_lines

OTHER = "run-other000000001"


def json_line(runid: str, function: str | None, message: str, logger: str = "functions.train") -> bytes:
    record = {"ts": "2026-01-01T00:00:00.000Z", "level": "INFO", "logger": logger, "msg": message, "runid": runid}
    return orjson.dumps({**record, **({"function": function} if function else {})}) + b"\n"


def text_line(runid: str, logger: str, message: str) -> bytes:
    return f"2026-01-01 00:00:00,000 INFO {logger} [{runid}] {message}\n".encode()


def test_read_lines_keeps_the_runs_records_of_either_format_by_step_and_cursor(tmp_path: Path) -> None:
    path = tmp_path / "functions.log"
    path.write_bytes(
        json_line("run-a", "ingest", "ingest: raw/iris/x.csv", "functions.ingest")
        + b"not a record, a stray print\n"
        + json_line(OTHER, "train", "someone else's")
        + text_line("run-a", "functions.train", "train: 0.93 after 5 epochs")
        + json_line("run-a", "lifecycle-train", "an instance of train in a pipeline", "functions.ml.training")
        + json_line("run-a", None, "a half-written li")[:-20]  # no newline yet: not read
    )
    lines, cursor = read_lines(path, "run-a", None, 0, 100)
    assert [(r["step"], r["message"]) for r in lines] == [
        ("ingest", "ingest: raw/iris/x.csv"),
        ("train", "train: 0.93 after 5 epochs"),
        ("lifecycle-train", "an instance of train in a pipeline"),
    ]
    assert lines[1]["time"] == "2026-01-01 00:00:00,000" and lines[1]["logger"] == "functions.train"
    assert [r["message"] for r in read_lines(path, "run-a", "train", 0, 100)[0]] == [
        "train: 0.93 after 5 epochs",
        "an instance of train in a pipeline",
    ]
    first, after_first = read_lines(path, "run-a", None, 0, 1)
    assert len(first) == 1 and read_lines(path, "run-a", None, after_first, 100)[0] == lines[1:]
    assert read_lines(path, "run-a", None, cursor, 100) == ([], cursor)
    with path.open("ab") as file:
        file.write(b"ne\n")
    assert read_lines(path, "run-a", None, cursor, 100)[0] == []  # the completed line is not json any more: dropped
    assert read_lines(path, "run-a", None, 10**9, 100)[0] == lines  # a cursor past the end: the file was recreated


@pytest.fixture
async def server(settings: Settings, broker: BrokerServer, start_dashboard, http: ClientSession) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    runid = new_runid()
    for event in start_of_run("iris", "train", runid):
        await publish_async(broker.url, event)
    path = log_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(json_line(runid, "ingest", "ingest: raw/iris/d.csv", "functions.ingest"))
    dashboard = await start_dashboard(broker.url, f"http://127.0.0.1:{free_port()}")
    return dashboard.url, runid


async def get(http: ClientSession, url: str) -> tuple[int, dict]:
    async with http.get(url) as response:
        return response.status, await response.json()


async def test_logs_api_long_polls_for_a_line_written_while_it_waits(
    server: tuple[str, str], settings: Settings, http: ClientSession
) -> None:
    url, runid = server
    status, body = await get(http, f"{url}/api/runs/{runid}/logs")
    assert status == 200 and [line["message"] for line in body["lines"]] == ["ingest: raw/iris/d.csv"]

    async def write_later() -> None:
        await asyncio.sleep(0.5)  # the line is written while the request waits for it
        with log_path(settings).open("ab") as file:
            file.write(json_line(runid, "featurize", "featurize: 150 rows", "functions.featurize"))

    writer = asyncio.create_task(write_later())
    started = time.monotonic()
    status, later = await get(http, f"{url}/api/runs/{runid}/logs?after={body['next']}&wait=10")
    await writer
    assert status == 200 and [line["step"] for line in later["lines"]] == ["featurize"]
    assert 0.4 < time.monotonic() - started < 9
    status, by_step = await get(http, f"{url}/api/runs/{runid}/logs?step=ingest")
    assert [line["step"] for line in by_step["lines"]] == ["ingest"]


async def test_logs_api_refuses_unknown_runs_and_bad_cursors(server: tuple[str, str], http: ClientSession) -> None:
    url, runid = server
    status, body = await get(http, f"{url}/api/runs/run-nope/logs")
    assert status == 404 and "no run 'run-nope'" in body["error"]
    for query in ("after=x", "after=-1", "limit=0", "wait=soon"):
        status, body = await get(http, f"{url}/api/runs/{runid}/logs?{query}")
        assert status == 400 and "after" in body["error"], query
