"""The broker's hand-made fast paths against their references on a generated corpus (Hypothesis, tests/fuzzing.py).

- ``eventing/wire.py`` against ``eventing/bindings.py`` (the cloudevents SDK's bindings): the same event or the same
  refusal for every input read, the same bytes for every event written.
- ``eventing/ingress.py``'s head reader and answer writer, and ``infra/http1.py``'s response reader and request
  writer, against a plain reading by ``httptools`` (llhttp, the parser uvicorn and aiohttp's C extension are built on,
  and the one both lean paths read with): a head the lean path takes is one llhttp reads the same, field for field,
  body included, and every plain POST llhttp reads is taken; what they write, llhttp reads back as meant.

The generators are the parser fuzzers' (tests/security/test_fuzz_parsers.py), not a second copy.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httptools
import pytest
from cloudevents.core.v1.event import CloudEvent
from hypothesis import given
from hypothesis import strategies as st

from eventing import bindings, wire
from eventing.broker import is_ingress_path
from eventing.events import InvalidEvent
from eventing.ingress import Answer, IngressProtocol, _parse_head
from infra.errors import KnflowError
from infra.http1 import Http1Pool, _Connection
from tests.fuzzing import fuzz, json_values, mutated_bytes
from tests.security.test_fuzz_parsers import binary_mode, bodies, kafka_records, structured_bodies

# -- CloudEvents codecs ------------------------------------------------------------------------------------------


def outcome(call: Any) -> tuple:
    """What a decoder made of an input: the event's attributes and data, or that it was refused.

    An event read without ``time`` is compared without it: the SDK stamps the time of reading on such an event, the
    fast path leaves it as it came (both are CloudEvents 1.0; the broker keeps what it was sent)."""
    try:
        event: CloudEvent = call()
    except InvalidEvent:
        return ("refused",)
    return read_as(event)


def read_as(event: CloudEvent) -> tuple:
    """An event's attributes (without a ``time`` the SDK stamped, see ``outcome``) and data."""
    attributes = dict(event.get_attributes())
    if attributes.get("time") is not None and _stamped(attributes["time"]):
        del attributes["time"]
    return ("event", attributes, event.get_data())


def _stamped(value: Any) -> bool:
    """Whether a ``time`` is the SDK's stamp of the reading (the generated inputs' times are in 2026-01-01)."""
    return isinstance(value, datetime) and abs((datetime.now(UTC) - value).total_seconds()) < 600


CODEC_SETTINGS, CODEC_BUDGET = fuzz("differential: wire.py vs the SDK's bindings", examples=200, seconds=30)


@CODEC_SETTINGS
@given(
    message=binary_mode() | structured_bodies.map(lambda b: ({"content-type": bindings.STRUCTURED_CONTENT_TYPE}, b)),
    batch=st.lists(structured_bodies, max_size=3).map(lambda items: b"[" + b",".join(items) + b"]"),
    record=kafka_records(),
)
def test_the_fast_codec_reads_every_input_as_the_sdk_bindings_do(
    message: tuple[dict[str, str], bytes], batch: bytes, record: tuple[list, bytes | None, bytes]
) -> None:
    if not CODEC_BUDGET.take():
        return
    headers, body = message
    assert outcome(lambda: wire.from_http(headers, body)) == outcome(lambda: bindings.from_http(headers, body))
    assert outcome(lambda: wire.from_json(body)) == outcome(lambda: bindings.from_json(body))
    assert _batch_outcome(wire.from_batch, batch) == _batch_outcome(bindings.from_batch, batch)
    kafka_headers, key, value = record
    fast = outcome(lambda: wire.from_kafka(kafka_headers, key, value))
    assert fast == outcome(lambda: bindings.from_kafka(kafka_headers, key, value))
    for decoded in (outcome(lambda: bindings.from_http(headers, body)), fast):
        if decoded[0] == "event":
            _writes_the_same_bytes(CloudEvent(dict(decoded[1]), decoded[2]))


@pytest.mark.parametrize("time", ["1", "1.5", "true", "[]", "{}", '"2026-01-01T00:00:00Z"'])
def test_a_structured_time_that_is_no_string_is_refused_by_both_codecs_alone_and_in_a_batch(time: str) -> None:
    body = (
        b'{"specversion":"1.0","id":"1","source":"/t","type":"t","time":%s,"datacontenttype":"application/json",'
        b'"data":{"k":1}}' % time.encode()
    )
    alone = outcome(lambda: bindings.from_json(body))
    assert outcome(lambda: wire.from_json(body)) == alone
    assert _batch_outcome(wire.from_batch, b"[" + body + b"]") == _batch_outcome(
        bindings.from_batch, b"[" + body + b"]"
    )
    assert (alone[0] == "event") == time.startswith('"')  # a number, bool, list or object is no time


def _batch_outcome(read: Any, body: bytes) -> tuple:
    try:
        return ("events", [read_as(event) for event in read(body)])
    except InvalidEvent:
        return ("refused",)


def _writes_the_same_bytes(event: CloudEvent) -> None:
    """The fast encoders give the reference's bytes: headers (names and values) and body, key and value."""
    assert wire.to_http_binary(event) == bindings.to_http_binary(event)
    fast_key, fast_headers, fast_value = wire.to_kafka(event)
    key, headers, value = bindings.to_kafka(event)
    assert (fast_key, sorted(fast_headers), fast_value) == (key, sorted(headers), value)


# -- ingress heads -----------------------------------------------------------------------------------------------

TAKEN_ROUTES = frozenset({"sources", "triggers", "health", "events", "metrics"})


class _Reference:
    """What llhttp read from one request or response."""

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []  # the head's, not the trailers
        self.body = b""
        self.head_done = False
        self.complete = False
        self.parser: Any = None
        self.keep_alive = False  # llhttp answers it while the message is being read, not after

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.head_done:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.head_done = True
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


def llhttp_request(raw: bytes) -> tuple[Any, _Reference] | None:
    """llhttp's reading of one whole request, or None where it refuses it."""
    seen = _Reference()
    parser = seen.parser = httptools.HttpRequestParser(seen)
    try:
        parser.feed_data(raw)
    except httptools.HttpParserError:
        return None
    return (parser if seen.complete else None), seen


METHODS = st.sampled_from(["POST", "POST", "POST", "GET", "post", "PUT"])
PATHS = st.sampled_from(["/", "/default/knflow", "/ns/b?x=1", "/a/b/c", "/sources/minio", "/%61/b", "/a b/c", "//x"])
VERSIONS = st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2", "HTTP/1.2", "http/1.1"])
NAMES = st.sampled_from(
    ["ce-id", "ce-type", "Content-Type", "X-A", "Connection", "Transfer-Encoding", "Expect", "Host", "Content-Length"]
) | st.text(st.sampled_from("aZ-_ :\t\x00é"), min_size=0, max_size=4)
VALUES = (
    st.sampled_from(["1", "keep-alive", "close", "chunked", "100-continue", "application/json", " padded\t", "07"])
    | st.text(st.sampled_from("a 1\t\r\n\x00\x7f,é☕%\x80"), max_size=6)
    | st.integers(0, 10**16).map(str)
)


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    """A request head (without its blank line): mostly an ingress POST, with headers added, changed or dropped."""
    host = ["Host: 127.0.0.1"] if draw(st.integers(0, 5)) else []
    lines = [*host, "Content-Length: 7", "ce-id: 1", "Content-Type: application/json"]
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.integers(0, 3)) or not lines:
            lines.insert(draw(st.integers(0, len(lines))), f"{draw(NAMES)}: {draw(VALUES)}")
        else:
            lines.pop(draw(st.integers(0, len(lines) - 1)))
    head = "\r\n".join([f"{draw(METHODS)} {draw(PATHS)} {draw(VERSIONS)}", *lines])
    return head.encode("utf-8", "surrogateescape")


HEAD_SETTINGS, HEAD_BUDGET = fuzz("differential: ingress heads vs llhttp", examples=400, seconds=30)


@HEAD_SETTINGS
@given(head=heads() | heads().flatmap(lambda h: mutated_bytes(h)))
def test_a_head_the_lean_path_takes_is_read_the_same_by_llhttp(head: bytes) -> None:
    if not HEAD_BUDGET.take():
        return
    try:
        taken = _parse_head(head, lambda path: is_ingress_path(path, TAKEN_ROUTES))
    except KnflowError as refused:  # answered 400 or 431 by the lean path
        assert refused.status == 431 or llhttp_request(head + b"\r\n\r\n") is None, head
        return
    if taken is None:
        return  # aiohttp answers it: nothing to compare
    read = llhttp_request(head + b"\r\n\r\n" + b"x" * taken.length)
    assert read is not None, f"the lean path took a head llhttp refuses: {head!r}"
    parser, seen = read
    assert parser.get_method() == b"POST"
    assert seen.url.decode() == taken.path + (f"?{taken.query}" if taken.query else ""), head
    assert parser.get_http_version() == ("1.0" if taken.http10 else "1.1")
    assert seen.keep_alive == taken.keep_alive, head
    assert seen.body == b"x" * taken.length
    joined: dict[str, str] = {}
    for name, value in seen.headers:
        text = name.decode("latin-1").lower()
        value_text = value.decode("utf-8", "surrogateescape").strip(" \t")
        joined[text] = f"{joined[text]}, {value_text}" if text in joined else value_text
    assert taken.headers == joined, head


@HEAD_SETTINGS
@given(path=st.sampled_from(["/", "/default/knflow", "/ns/b?x=1"]), values=st.lists(VALUES, max_size=3))
def test_a_plain_ingress_post_is_taken_by_the_lean_path_when_llhttp_reads_it(path: str, values: list[str]) -> None:
    lines = ["Host: 127.0.0.1", "Content-Length: 2", *(f"x-{i}: {v}" for i, v in enumerate(values))]
    head = "\r\n".join([f"POST {path} HTTP/1.1", *lines]).encode("utf-8", "surrogateescape")
    if llhttp_request(head + b"\r\n\r\n{}") is None:
        return
    assert _parse_head(head, lambda p: is_ingress_path(p, TAKEN_ROUTES)) is not None, head


# -- what the lean paths write -----------------------------------------------------------------------------------


class _Transport:
    """A transport that keeps what is written."""

    def __init__(self) -> None:
        self.written = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True


class _Server:
    def __init__(self) -> None:
        self.connections: set = set()

    def date(self) -> bytes:
        return b"Mon, 30 Nov 2026 09:00:00 GMT"


def llhttp_response(raw: bytes) -> tuple[Any, _Reference]:
    seen = _Reference()
    parser = seen.parser = httptools.HttpResponseParser(seen)
    parser.feed_data(raw)
    assert seen.complete, raw
    return parser, seen


header_names = st.text(st.sampled_from("abcXYZ-"), min_size=1, max_size=8)
header_values = st.text(st.sampled_from("ab 1/;=é"), max_size=8).map(str.strip)
ANSWER_SETTINGS, ANSWER_BUDGET = fuzz("differential: lean answers read by llhttp", examples=150, seconds=30)


@ANSWER_SETTINGS
@given(
    status=st.sampled_from([200, 202, 204, 400, 404, 413, 429, 500, 503, 599]),
    body=st.binary(max_size=64),
    headers=st.none() | st.dictionaries(header_names | st.sampled_from(["Content-Length", "Date"]), header_values),
    keep_alive=st.booleans(),
    http10=st.booleans(),
)
def test_the_ingress_answer_is_read_by_llhttp_as_it_was_meant(
    status: int, body: bytes, headers: dict[str, str] | None, keep_alive: bool, http10: bool
) -> None:
    if not ANSWER_BUDGET.take():
        return
    raw = _written(Answer(status, body, headers), keep_alive, http10)
    parser, seen = llhttp_response(raw)
    assert parser.get_status_code() == status
    assert seen.keep_alive == keep_alive
    assert seen.body == (b"" if status in (204, 304) else body)
    got = {name.decode().lower(): value.decode() for name, value in seen.headers}
    for name, value in (headers or {}).items():
        if name.lower() not in ("content-length", "date"):
            assert got[name.lower()] == value, raw


def _written(answer: Answer, keep_alive: bool, http10: bool) -> bytes:
    """The bytes ``IngressProtocol`` writes for ``answer`` to one request."""
    conn = IngressProtocol(_Server())  # type: ignore[arg-type]  # the writer reads only date() and connections
    transport = _Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]  # a transport that keeps what is written
    if http10:
        request = b"POST / HTTP/1.0\r\nContent-Length: 0" + (b"\r\nConnection: keep-alive" if keep_alive else b"")
    else:
        request = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0" + (b"" if keep_alive else b"\r\nConnection: close")
    head = _parse_head(request, lambda path: True)
    assert head is not None
    conn._answer(answer, head)
    return transport.written


# -- http1.py: responses read, requests written ------------------------------------------------------------------


@st.composite
def responses(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A response (after optional 1xx interim ones) framed by Content-Length, chunks or the connection's close,
    and whether it answers a HEAD request."""
    head_request = draw(st.integers(0, 5)) == 0
    status = draw(st.sampled_from([200, 201, 202, 204, 304, 400, 404, 500, 503]))
    reason = draw(st.sampled_from(["OK", "Accepted", "", "Not Found", "Weird Reason Here"]))
    body = draw(st.binary(max_size=200))
    headers = [(n, v) for n, v in draw(st.dictionaries(header_names, header_values, max_size=4)).items()]
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    if framing == "length":
        headers.append(("Content-Length", str(len(body))))
        payload = body
    elif framing == "chunked":
        headers.append(("Transfer-Encoding", "chunked"))
        sizes = draw(st.lists(st.integers(1, 50), max_size=5))
        payload, at = b"", 0
        for size in sizes:
            part = body[at : at + size]
            at += size
            if part:
                ext = draw(st.sampled_from(["", ";name=value"]))
                payload += b"%x%s\r\n%s\r\n" % (len(part), ext.encode(), part)
        payload += b"0\r\n" + draw(st.sampled_from([b"", b"X-Trailer: 1\r\n"])) + b"\r\n"
    else:
        headers.append(("Connection", "close"))
        payload = body
    if status in (204, 304) or head_request:
        payload = b""
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" if draw(st.booleans()) else b""
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers) + "\r\n"
    return interim + head.encode() + payload, head_request


RESPONSE_SETTINGS, RESPONSE_BUDGET = fuzz("differential: http1 responses vs llhttp", examples=200, seconds=30)


@RESPONSE_SETTINGS
@given(response=responses(), cuts=st.lists(st.integers(1, 400), max_size=6))
def test_the_delivery_client_reads_every_response_as_llhttp_does(response: tuple[bytes, bool], cuts: list[int]) -> None:
    if not RESPONSE_BUDGET.take():
        return
    raw, head_request = response
    got = asyncio.run(_read(raw, sorted(set(cuts)), head_request))
    interim = raw.startswith(b"HTTP/1.1 100")
    final = raw[raw.index(b"\r\n\r\n") + 4 :] if interim else raw
    seen = _Reference()
    parser = seen.parser = httptools.HttpResponseParser(seen)
    if head_request:
        parser.set_dangerous_leniencies(lenient_data_after_close=True)
    parser.feed_data(final)
    assert got.status == parser.get_status_code()
    assert got.raw_headers == tuple((n.decode(), v.decode("utf-8", "surrogateescape")) for n, v in seen.headers)
    assert got.data == seen.body


async def _read(raw: bytes, cuts: list[int], head_request: bool) -> Any:
    """What ``http1._Connection`` makes of ``raw`` arriving in pieces cut at ``cuts``, then the connection closing."""
    conn = _Connection()
    transport = _Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]  # a transport that keeps what is written
    waiter = conn.request(b"", None, head_request)
    for start, end in zip([0, *cuts], [*cuts, len(raw)], strict=True):
        if start < end and not waiter.done():
            conn.data_received(raw[start:end])
    if not waiter.done():
        conn.connection_lost(None)
    return await waiter


REQUEST_SETTINGS, REQUEST_BUDGET = fuzz("differential: http1 requests read by llhttp", examples=80, seconds=30)


@REQUEST_SETTINGS
@given(
    method=st.sampled_from(["POST", "PUT", "GET"]),
    path=st.sampled_from(["/", "/functions/echo", "/a?x=1&y=%20"]),
    headers=st.dictionaries(header_names.map("ce-".__add__) | st.just("Content-Type"), header_values, max_size=5),
    body=st.binary(max_size=100) | json_values.map(lambda v: repr(v).encode()) | bodies,
)
def test_the_delivery_client_writes_requests_llhttp_reads_as_sent(
    method: str, path: str, headers: dict[str, str], body: bytes
) -> None:
    if not REQUEST_BUDGET.take():
        return
    raw = asyncio.run(_sent(method, path, headers, body))
    read = llhttp_request(raw)
    assert read is not None, raw
    parser, seen = read
    assert parser.get_method().decode() == method and seen.url.decode() == path and seen.body == body
    got = [(n.decode(), v.decode()) for n, v in seen.headers]
    assert got == [("Host", "fn.test"), ("Content-Length", str(len(body))), *headers.items()]


async def _sent(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    """The bytes ``Http1Pool`` sends for one request, caught by a loopback server that answers 204."""
    caught = bytearray()
    done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        caught.extend(await reader.readuntil(b"\r\n\r\n"))
        length = next(int(v) for n, v in _lines(caught) if n.lower() == "content-length")
        caught.extend(await reader.readexactly(length))
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()
        writer.close()
        done.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = Http1Pool()
    try:
        answer = await pool.request(method, f"http://127.0.0.1:{port}{path}", headers, body, 5.0)
        assert answer.status == 204
        await asyncio.wait_for(done.wait(), 5)
    finally:
        await pool.close()
        server.close()
    return bytes(caught).replace(f"Host: 127.0.0.1:{port}".encode(), b"Host: fn.test", 1)


def _lines(head: bytes) -> list[tuple[str, str]]:
    text = bytes(head).decode("latin-1").split("\r\n")[1:]
    return [(n.strip(), v.strip()) for n, _, v in (line.partition(":") for line in text if line)]
