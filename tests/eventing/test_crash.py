"""Durability of the embedded broker: SIGKILL mid-stream, restart, and every accepted event is still delivered."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web

from eventing.bindings import to_http_binary
from eventing.events import new_event
from infra.localservices import free_port, wait_for_port
from tests.eventually import eventually
from tests.scrape import scrape, value
from tests.unguarded import UNGUARDED
from tests.webapps import served

TOTAL = 10_000
pytestmark = pytest.mark.slow


class BrokerProcess:
    """``python -m eventing.broker`` as a child process we can kill."""

    def __init__(self, tmp: Path, port: int):
        self.port, self.proc = port, None
        self.env = {
            **os.environ,
            **UNGUARDED,
            "KNFLOW_DATA_DIR": str(tmp / "data"),
            "KNFLOW_BROKER": f"embedded://{tmp / 'events'}",
            "KNFLOW_ARTIFACTS": f"file://{tmp / 'artifacts'}",
            "KNFLOW_BROKER_PORT": str(port),
            "KNFLOW_LOG_LEVEL": "WARNING",
        }
        self.log = (tmp / "broker.log").open("ab")

    def start(self) -> None:
        argv = [sys.executable, "-m", "eventing.broker"]
        self.proc = subprocess.Popen(argv, env=self.env, stdout=self.log, stderr=self.log, cwd=Path.cwd())
        wait_for_port(self.port, 30, self.proc, "broker")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(15)


async def acked_all(url: str) -> bool:
    """Whether the ``sink`` trigger has acked every event, as the broker's /metrics says (its lag is 0)."""
    async with aiohttp.ClientSession() as http:
        return value(await scrape(http, url.rstrip("/")), "knflow_broker_trigger_lag", trigger="sink") == 0


async def produce(url: str, events: list, accepted: set[str], stop_at: int | None) -> None:
    """Post events with 16 concurrent clients until all are accepted or ``stop_at`` acceptances."""
    pending = list(reversed(events))

    async def worker(session: aiohttp.ClientSession) -> None:
        while pending and (stop_at is None or len(accepted) < stop_at):
            event = pending.pop()
            headers, body = to_http_binary(event)
            try:
                async with session.post(url, data=body, headers=headers) as r:
                    if r.status == 202:
                        accepted.add(event.get_id())
                        continue
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)  # a client's pause before it retries (the broker is being restarted)
            pending.append(event)  # unknown outcome: send it again (delivery counts by id)

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(16)))


@pytest.mark.parametrize("seed", [11, 22, 33])
async def test_sigkill_mid_stream_loses_no_accepted_event(tmp_path: Path, seed: int):
    delivered: dict[str, int] = {}

    async def handle(request: web.Request) -> web.Response:
        event_id = request.headers["ce-id"]
        delivered[event_id] = delivered.get(event_id, 0) + 1
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/", handle)
    async with served(app) as sink:
        broker = BrokerProcess(tmp_path, free_port())
        url = f"http://127.0.0.1:{broker.port}/"
        events = [new_event("crash.test", "tests", {"i": i}, runid=f"run-{i % 50}") for i in range(TOTAL)]
        accepted: set[str] = set()
        kill_at = random.Random(seed).randint(1_000, TOTAL - 1_000)
        try:
            broker.start()
            async with (
                aiohttp.ClientSession() as s,
                s.put(url + "triggers/sink", data=orjson.dumps({"subscriber": {"uri": f"{sink}/"}})) as r,
            ):
                assert r.status == 200
            await produce(url, events, accepted, stop_at=kill_at)
            broker.kill()  # mid-stream: clients in flight, deliveries in flight, commits unflushed
            broker.start()
            await produce(url, [e for e in events if e.get_id() not in accepted], accepted, stop_at=None)
            assert len(accepted) == TOTAL
            await eventually(
                lambda: accepted <= delivered.keys(), 60, f"every accepted event delivered (kill {kill_at})"
            )
            # once committed, nothing is delivered again: a clean restart delivers nothing new
            await eventually(lambda: acked_all(url), 10, "the trigger's last deliveries acked")
            broker.terminate()
            before = sum(delivered.values())
            broker.start()
            await asyncio.sleep(1.5)  # time for a redelivery to show, if the restart made one
            assert sum(delivered.values()) == before
            duplicates = sum(n - 1 for n in delivered.values())
            assert duplicates <= 1_000, f"{duplicates} redeliveries: more than the in-flight window at the kill"
        finally:
            if broker.proc and broker.proc.poll() is None:
                broker.kill()
