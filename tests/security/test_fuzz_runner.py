"""Fuzzing the live function runner: raw HTTP/1.1 deliveries (its lean path and aiohttp's, heads and bodies changed,
sent in pieces) are answered below 500 or not at all, a good one 200; the worker process survives it all."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from functions.runtime.runner import Runner
from infra.settings import load_settings
from tests.fuzzing import fuzz
from tests.security.test_fuzz_broker import (
    BINARY,
    DEADLINE_S,
    answered_below_500,
    exchange,
    http_request,
    raw_requests,
)

GOOD_PATHS = (b"/functions/echo", b"/echo")
OTHER_PATHS = (b"/functions/nope", b"/functions", b"/metrics", b"/admin/functions/echo", b"/a/b")


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runner, asyncio.AbstractEventLoop]]:
    """A runner (the platform's default guard) on its own event loop thread, for blocking sockets to talk to."""
    data = Path(tmp_path_factory.mktemp("fuzz-runner"))
    server = Runner(load_settings({"KNFLOW_DATA_DIR": str(data), "KNFLOW_LOG_FORMAT": "text"}, config_file=None))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(0), loop).result(60)
    yield server, loop
    asyncio.run_coroutine_threadsafe(server.stop(), loop).result(60)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


SETTINGS, BUDGET = fuzz("runner: raw HTTP/1.1 deliveries", examples=200, seconds=15)


def test_raw_deliveries_are_answered_below_500_and_the_worker_survives(runner) -> None:
    server, _ = runner
    good = http_request(GOOD_PATHS[0], BINARY, b'{"k": 1}')
    assert exchange(server.port, good, [], DEADLINE_S).startswith(b"HTTP/1.1 200"), "the echo function answers"
    pid = server.workers["echo"].pid
    deliveries = raw_requests(GOOD_PATHS, OTHER_PATHS)
    answered_below_500(server.port, deliveries, SETTINGS, BUDGET, good=200)
    assert server.workers["echo"].pid == pid and server.workers["echo"].restarts == 0
    assert exchange(server.port, good, [], DEADLINE_S).startswith(b"HTTP/1.1 200")
