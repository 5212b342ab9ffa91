"""Fixtures for the eventing suite: a real aiohttp subscriber on loopback and a broker per backend."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from cloudevents.core.v1.event import CloudEvent

from eventing.bindings import from_http, to_http_binary, to_http_structured
from eventing.broker import BrokerServer
from eventing.triggers import Trigger
from functions.contract import with_lifecycle
from infra.settings import load_settings
from tests.unguarded import UNGUARDED
from tests.webapps import served

_topics = itertools.count()


@dataclass
class Received:
    path: str
    event: CloudEvent
    at: float


@dataclass
class Subscriber:
    """A real HTTP subscriber: every path records what it got; ``behaviours[path]`` chooses the answer."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    behaviours: dict[str, Callable[[CloudEvent, int], web.StreamResponse]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on(self, path: str, behaviour: Callable[[CloudEvent, int], web.StreamResponse]) -> str:
        self.behaviours[path] = behaviour
        return f"{self.url}{path}"

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; received {[(r.path, r.event.get_type()) for r in self.received]}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        event = from_http(request.headers, await request.read())
        self.received.append(Received(request.path, event, time.monotonic()))
        self.counts[request.path] += 1
        self.changed.set()
        behaviour = self.behaviours.get(request.path)
        if behaviour is None:
            return web.Response(status=200)
        answer = behaviour(event, self.counts[request.path])
        return await answer if asyncio.iscoroutine(answer) else answer


def reply_with(event: CloudEvent, structured: bool = False) -> web.Response:
    headers, body = (to_http_structured if structured else to_http_binary)(event)
    return web.Response(status=200, body=body, headers=headers)


@pytest.fixture
async def subscriber() -> AsyncIterator[Subscriber]:
    sub = Subscriber()
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", sub.handle)
    async with served(app) as sub.url:
        yield sub


def broker_env(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    env = {
        "KNFLOW_DATA_DIR": str(tmp_path / "data"),
        "KNFLOW_ARTIFACTS": f"file://{tmp_path / 'artifacts'}",
        **UNGUARDED,
    }
    if backend == "kafka":
        kafka = request.getfixturevalue("kafka_server")
        env["KNFLOW_BROKER"] = f"kafka://{kafka.url}?topic=knflow-test-{next(_topics)}-{int(time.time())}"
    else:
        env["KNFLOW_BROKER"] = f"embedded://{tmp_path / 'events'}"
    return env


@pytest.fixture(params=["embedded", "kafka"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make_broker(backend: str, tmp_path: Path, request: pytest.FixtureRequest):
    """``make_broker(triggers, **eventing_env)`` -> a started-on-enter BrokerServer on the parametrized backend."""
    env = broker_env(backend, tmp_path, request)

    def make(triggers: list[Trigger] = (), sources: list | None = (), **extra: str) -> BrokerServer:
        settings = with_lifecycle(load_settings({**env, **extra}, config_file=None))  # objects under raw/ are data
        return BrokerServer(settings, triggers, sources=sources, port=0)

    return make
