"""Fuzzing the live broker: raw HTTP/1.1 bytes (CloudEvents POSTs in binary and structured mode, their heads and
bodies changed, sent in pieces) are answered 2xx or 4xx, or not at all (a body cut short), never 5xx; a good POST is
answered 202 within a deadline; MinIO notifications and webhook requests get 2xx or 4xx; the broker still takes a
good event afterwards."""

from __future__ import annotations

import asyncio
import itertools
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import urllib3
from hypothesis import given
from hypothesis import strategies as st

from eventing.broker import BrokerServer
from eventing.sources.webhook import SIGNATURE_HEADER, sign
from tests.fuzzing import fuzz, json_values, mutated_bytes
from tests.security.test_bad_input import SECRET, broker_settings
from tests.security.test_fuzz_parsers import notifications, signatures

DEADLINE_S = 10.0  # a good request is answered within this
QUIET_S = 0.3
STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ")
EVENT = {"specversion": "1.0", "id": "1", "source": "/fuzz", "type": "dev.fuzz"}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerServer]:
    """A broker on its own event loop thread, so that blocking sockets can talk to it from Hypothesis' examples."""
    server = BrokerServer(broker_settings(Path(tmp_path_factory.mktemp("fuzz-broker"))), [], port=0)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(60)
    yield server
    asyncio.run_coroutine_threadsafe(server.stop(), loop).result(60)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def http_request(path: bytes, headers: list[tuple[bytes, bytes]], body: bytes, length: bytes | None = None) -> bytes:
    lines = [b"POST " + path + b" HTTP/1.1", b"Host: 127.0.0.1"] + [k + b": " + v for k, v in headers]
    lines.append(b"Content-Length: " + (str(len(body)).encode() if length is None else length))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


BINARY = [(b"ce-" + k.encode(), v.encode()) for k, v in EVENT.items()] + [(b"content-type", b"application/json")]
STRUCTURED = [(b"content-type", b"application/cloudevents+json")]
header_names = st.sampled_from([b"ce-id", b"ce-type", b"ce-time", b"content-type", b"Transfer-Encoding", b"Expect"])
header_values = st.sampled_from([b"", b"chunked", b"100-continue", b"\xff", b"1.0", b"a\tb"]) | st.binary(max_size=8)


INGRESS_PATHS = (b"/", b"/default/knflow")


@st.composite
def raw_requests(
    draw: st.DrawFn,
    good: tuple[bytes, ...] = INGRESS_PATHS,
    others: tuple[bytes, ...] = (b"/a/b/c", b"/sources/minio", b"/triggers/x", b"*"),
) -> tuple[bytes, bool]:
    """A CloudEvents POST to one of ``good`` or ``others``, binary or structured, with its head and body changed; and
    whether it is unchanged (then it is to one of ``good``)."""
    body = orjson.dumps({**EVENT, "data": {"k": 1}}) if (structured := draw(st.booleans())) else b'{"k": 1}'
    headers = list(STRUCTURED if structured else BINARY)
    path = draw(st.sampled_from([*good, *others]))
    length = None
    kept = path in good and draw(st.integers(0, 3)) == 0
    if not kept:
        for _ in range(draw(st.integers(0, 3))):
            headers.insert(draw(st.integers(0, len(headers))), (draw(header_names), draw(header_values)))
        body = draw(st.just(body) | mutated_bytes(body) | json_values.map(orjson.dumps))
        length = draw(st.none() | st.sampled_from([b"0", b"-1", b"1e3", b"99999999999999999999", b"5, 5"]))
    raw = http_request(path, headers, body, length)
    if not kept and draw(st.booleans()):
        raw = draw(mutated_bytes(raw, most=3))
    return raw, kept


def exchange(port: int, raw: bytes, cuts: list[float], wait: float = QUIET_S) -> bytes:
    """Send ``raw`` cut at ``cuts`` (fractions) and read what the broker answers until it closes or, after ``wait``
    for the first byte, stays quiet for ``QUIET_S`` (a request cut short waits for the rest of its body)."""
    points = sorted({int(c * len(raw)) for c in cuts} | {0, len(raw)})
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S) as sock:
        try:
            for start, end in itertools.pairwise(points):
                sock.sendall(raw[start:end])
                time.sleep(0.001)  # let the broker read each piece on its own
            sock.settimeout(wait)
            while chunk := sock.recv(1 << 16):
                answer += chunk
                sock.settimeout(QUIET_S)
        except (ConnectionResetError, BrokenPipeError, TimeoutError):
            pass  # closed by the broker, or nothing more to read
    return answer


RAW_SETTINGS, RAW_BUDGET = fuzz("broker: raw HTTP/1.1 CloudEvents POSTs", examples=250, seconds=15)


def test_raw_requests_are_answered_2xx_or_4xx_or_closed(broker: BrokerServer) -> None:
    answered_below_500(broker.port, raw_requests(), RAW_SETTINGS, RAW_BUDGET, good=202)
    assert_takes_a_good_event(broker)


def answered_below_500(port: int, requests: Any, settings: Any, budget: Any, good: int) -> None:
    """Send each drawn ``(raw, kept)`` request, cut in pieces, to ``port``: every answer below 500, an unchanged
    (kept) one ``good``; both good answers and 4xx were seen."""
    statuses: Counter[int] = Counter()

    @settings
    @given(request=requests, cuts=st.lists(st.floats(0, 1), max_size=4))
    def one(request: tuple[bytes, bool], cuts: list[float]) -> None:
        if not budget.take():
            return
        raw, kept = request
        answer = exchange(port, raw, cuts, DEADLINE_S if kept else QUIET_S)
        codes = [int(code) for code in STATUS.findall(answer)]
        assert all(100 <= code < 500 for code in codes), (codes, raw[:300], answer[:300])
        assert not kept or codes[:1] == [good], (codes, raw[:300], answer[:300])
        statuses.update(codes or [0])

    one()
    assert statuses[good] and sum(n for code, n in statuses.items() if 400 <= code < 500), statuses


def assert_takes_a_good_event(broker: BrokerServer) -> None:
    answer = exchange(broker.port, http_request(b"/", BINARY, b'{"k": 1}'), [], DEADLINE_S)
    assert answer.startswith(b"HTTP/1.1 202"), answer[:300]


SOURCE_SETTINGS, SOURCE_BUDGET = fuzz("broker: MinIO notifications and webhooks over HTTP", examples=200, seconds=10)
JSON = {"Content-Type": "application/json"}
webhook_bodies = json_values.map(orjson.dumps) | mutated_bytes(b'{"dataset": "iris"}')


@st.composite
def webhook_requests(draw: st.DrawFn) -> tuple[bytes, str]:
    body = draw(webhook_bodies)
    header = draw(st.just(sign(SECRET, body)) | signatures | st.text(max_size=8))
    return body, header


def test_source_requests_are_answered_2xx_or_4xx(broker: BrokerServer) -> None:
    http = urllib3.PoolManager(retries=False, timeout=DEADLINE_S)
    statuses: Counter[int] = Counter()

    @SOURCE_SETTINGS
    @given(note=notifications, webhook=webhook_requests())
    def one(note: object, webhook: tuple[bytes, str]) -> None:
        if not SOURCE_BUDGET.take():
            return
        answer = http.request("POST", f"{broker.url}/sources/minio", body=orjson.dumps(note), headers=JSON)
        assert 200 <= answer.status < 500, (answer.status, note, answer.data[:300])
        body, header = webhook
        header = re.sub(r"[\x00-\x1f\x7f]", "", header)  # what an HTTP client can send
        headers = {SIGNATURE_HEADER: header.encode("utf-8", "surrogateescape").decode("latin-1"), **JSON}
        answer = http.request("POST", f"{broker.url}/sources/webhook", body=body, headers=headers)
        assert 200 <= answer.status < 500, (answer.status, header, body[:300], answer.data[:300])
        statuses[answer.status] += 1

    one()
    assert statuses[202] and statuses[401], statuses
    assert_takes_a_good_event(broker)
