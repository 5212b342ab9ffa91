"""Fixtures for the function host and runner tests: settings on a temp dir, an in-process host, event posting."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from eventing.bindings import to_http_binary
from eventing.events import new_event
from functions.runtime.host import FunctionHost
from functions.runtime.loader import load_function
from infra.settings import Settings, load_settings
from tests.unguarded import UNGUARDED

FIXTURES = Path(__file__).parent / "fixtures"


def make_settings(tmp_path: Path, **env: str) -> Settings:
    base = {"KNFLOW_DATA_DIR": str(tmp_path / "data"), "KNFLOW_LOG_FORMAT": "text"}
    return load_settings({**base, **UNGUARDED, **{f"KNFLOW_{k.upper()}": v for k, v in env.items()}})


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def post_event(http: aiohttp.ClientSession, url: str, type_: str = "test.echo", data: Any = None, **kw):
    """POST a binary-mode event; returns (status, headers, body)."""
    event = new_event(type_, "/tests", {"n": 1} if data is None else data, **kw)
    headers, body = to_http_binary(event)
    async with http.post(url, data=body, headers=headers) as response:
        return response.status, response.headers, await response.read()


@pytest.fixture
async def start_host(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start a FunctionHost in-process on a free port: ``url = await start_host(target, **settings_env)``
    (``invoke="http"`` hosts an ASGI function that gets the raw request)."""
    hosts: list[FunctionHost] = []

    async def start(target: str, sink: str | None = None, invoke: str | None = None, **env: str) -> str:
        host = FunctionHost(load_function(target, invoke=invoke), make_settings(tmp_path, **env), sink=sink)
        bound = await host.start(["127.0.0.1:0"])
        hosts.append(host)
        start.host = host
        return f"http://{bound[0]}/"

    yield start
    for host in hosts:
        await host.stop()
