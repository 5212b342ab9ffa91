"""Fuzzing the live function runner: raw HTTP/1.1 deliveries (its lean path and aiohttp's, heads and bodies changed,
sent in pieces) are answered below 500 or not at all, a good one 200; the worker process survives it all."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from functions.runtime.runner import Runner
from infra.settings import load_settings
from tests.fuzzing import fuzz, json_values, mutated_bytes
from tests.security.test_fuzz_broker import (
    BINARY,
    DEADLINE_S,
    EVENT,
    QUIET_S,
    STATUS,
    STRUCTURED,
    exchange,
    header_names,
    header_values,
    http_request,
)

GOOD_PATHS = (b"/functions/echo", b"/echo")


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


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A CloudEvents POST to the runner, binary or structured, with its head and body changed; and whether it is
    unchanged (then it is to a hosted function)."""
    body = orjson.dumps({**EVENT, "data": {"k": 1}}) if (structured := draw(st.booleans())) else b'{"k": 1}'
    headers = list(STRUCTURED if structured else BINARY)
    paths = [*GOOD_PATHS, b"/functions/nope", b"/functions", b"/metrics", b"/admin/functions/echo", b"/a/b"]
    path = draw(st.sampled_from(paths))
    length = None
    kept = path in GOOD_PATHS and draw(st.integers(0, 3)) == 0
    if not kept:
        for _ in range(draw(st.integers(0, 3))):
            headers.insert(draw(st.integers(0, len(headers))), (draw(header_names), draw(header_values)))
        body = draw(st.just(body) | mutated_bytes(body) | json_values.map(orjson.dumps))
        length = draw(st.none() | st.sampled_from([b"0", b"-1", b"1e3", b"99999999999999999999", b"5, 5"]))
    raw = http_request(path, headers, body, length)
    if not kept and draw(st.booleans()):
        raw = draw(mutated_bytes(raw, most=3))
    return raw, kept


SETTINGS, BUDGET = fuzz("runner: raw HTTP/1.1 deliveries", examples=200, seconds=15)


def test_raw_deliveries_are_answered_below_500_and_the_worker_survives(runner) -> None:
    server, _ = runner
    good = http_request(GOOD_PATHS[0], BINARY, b'{"k": 1}')
    assert exchange(server.port, good, [], DEADLINE_S).startswith(b"HTTP/1.1 200"), "the echo function answers"
    pid = server.workers["echo"].pid
    statuses: Counter[int] = Counter()

    @SETTINGS
    @given(request=deliveries(), cuts=st.lists(st.floats(0, 1), max_size=4))
    def one(request: tuple[bytes, bool], cuts: list[float]) -> None:
        if not BUDGET.take():
            return
        raw, kept = request
        answer = exchange(server.port, raw, cuts, DEADLINE_S if kept else QUIET_S)
        codes = [int(code) for code in STATUS.findall(answer)]
        assert all(100 <= code < 500 for code in codes), (codes, raw[:300], answer[:300])
        assert not kept or codes[:1] == [200], (codes, raw[:300], answer[:300])
        statuses.update(codes or [0])

    one()
    assert statuses[200] and sum(n for code, n in statuses.items() if 400 <= code < 500), statuses
    assert server.workers["echo"].pid == pid and server.workers["echo"].restarts == 0
    assert exchange(server.port, good, [], DEADLINE_S).startswith(b"HTTP/1.1 200")
