"""The broker's lean ingress path over raw sockets: keep-alive, pipelining, split segments, and the hand-over
of a connection to aiohttp at the first request it does not take."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from eventing.broker import is_ingress_path
from eventing.ingress import MAX_HEAD, _parse_head
from eventing.triggers import Trigger
from infra.errors import KnflowError
from tests.eventually import eventually


@pytest.fixture
def backend() -> str:
    return "embedded"  # the ingress is the same for both logs; the delivery suite covers Kafka


def post(event_id: str, path: str = "/", extra: str = "", body: bytes = b'{"n":1}') -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nce-specversion: 1.0\r\nce-id: {event_id}\r\n"
        f"ce-source: /test\r\nce-type: test.ingress\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(head[0].split(" ")[1]), headers, body


async def connect(broker) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", broker.port)


async def test_keep_alive_connection_takes_many_events_and_answers_202_with_a_date(make_broker, subscriber):
    url = f"{subscriber.url}/sink"
    async with make_broker([Trigger("t", url)]) as broker:
        reader, writer = await connect(broker)
        for i in range(5):
            writer.write(post(f"keep-{i}"))
            status, headers, body = await read_response(reader)
            assert (status, body) == (202, b"") and headers["date"].endswith("GMT")
        writer.close()
        await subscriber.wait_for(lambda: len(subscriber.at("/sink")) == 5)
        assert [r.event.get_id() for r in subscriber.at("/sink")] == [f"keep-{i}" for i in range(5)]


async def test_pipelined_requests_are_answered_in_order(make_broker):
    async with make_broker() as broker:
        reader, writer = await connect(broker)
        writer.write(post("p-1") + post("bad", body=b"{not json") + post("p-3", path="/ns/default"))
        answers = [await read_response(reader) for _ in range(3)]
        assert [a[0] for a in answers] == [202, 400, 202]
        assert "error" in orjson.loads(answers[1][2])
        writer.close()


async def test_a_batch_is_stored_whole_in_order_and_a_bad_one_not_at_all(make_broker, subscriber):
    from eventing.bindings import BATCH_CONTENT_TYPE, to_json
    from eventing.events import new_event

    url = f"{subscriber.url}/sink"
    events = [new_event("test.batch", "/test", {"n": i}, runid="run-batch") for i in range(3)]
    good = b"[" + b",".join(to_json(e) for e in events) + b"]"
    bad = b"[" + to_json(new_event("test.batch", "/test", {"n": 9})) + b',{"id": "x"}]'
    async with make_broker([Trigger("t", url)]) as broker:
        reader, writer = await connect(broker)
        for body, expected in ((bad, 400), (good, 202)):
            head = f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {BATCH_CONTENT_TYPE}\r\n"
            head += f"Content-Length: {len(body)}"
            writer.write(head.encode() + b"\r\n\r\n" + body)
            status, _, answer = await read_response(reader)
            assert status == expected, answer
        assert "batch item 1" in orjson.loads((await _post_batch_via_aiohttp(broker, bad))[1])["error"]
        writer.close()
        await subscriber.wait_for(lambda: len(subscriber.at("/sink")) == 3)
        assert [r.event.get_data()["n"] for r in subscriber.at("/sink")] == [0, 1, 2]
        stored, _ = await broker.log.history(after=None, limit=10, runid=None, type="test.batch")
        assert len(stored) == 3


async def _post_batch_via_aiohttp(broker, body: bytes) -> tuple[int, bytes]:
    """The same POST through aiohttp's route (chunked: the lean path hands it over)."""
    import aiohttp

    from eventing.bindings import BATCH_CONTENT_TYPE

    async def chunks():  # type: ignore[no-untyped-def]
        yield body

    headers = {"content-type": BATCH_CONTENT_TYPE}
    async with aiohttp.ClientSession() as session, session.post(broker.url, data=chunks(), headers=headers) as r:
        return r.status, await r.read()


async def test_a_request_split_across_segments_is_reassembled(make_broker, subscriber):
    url = f"{subscriber.url}/sink"
    async with make_broker([Trigger("t", url)]) as broker:
        reader, writer = await connect(broker)
        data = post("split", body=b'{"payload":"' + b"x" * 5000 + b'"}')
        for i in range(0, len(data), 7 if len(data) < 100 else 997):
            writer.write(data[i : i + 997])
            await writer.drain()
            await asyncio.sleep(0.001)  # each piece its own segment
        assert (await read_response(reader))[0] == 202
        writer.close()
        await subscriber.wait_for(lambda: len(subscriber.at("/sink")) == 1)
        assert subscriber.at("/sink")[0].event.get_data() == {"payload": "x" * 5000}


async def test_connection_moves_to_aiohttp_at_the_first_other_request_and_keeps_working(make_broker, subscriber):
    url = f"{subscriber.url}/sink"
    async with make_broker([Trigger("t", url)]) as broker:
        reader, writer = await connect(broker)
        health = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        writer.write(post("before") + health + post("after"))  # the hand-over happens with bytes already buffered
        statuses = [(await read_response(reader))[:3:2] for _ in range(3)]
        assert statuses[0] == (202, b"") and statuses[2] == (202, b"")
        assert statuses[1][0] == 200 and orjson.loads(statuses[1][1])["status"] == "ok"
        writer.close()
        await subscriber.wait_for(lambda: len(subscriber.at("/sink")) == 2)


async def test_chunked_oversized_and_unknown_requests_get_aiohttp_answers(make_broker, subscriber):
    url = f"{subscriber.url}/sink"
    async with make_broker([Trigger("t", url)], KNFLOW_EVENTING_MAX_EVENT_BYTES="1000") as broker:
        body = b'{"n":2}'
        chunked = post("chunked", body=b"").replace(b"Content-Length: 0\r\n", b"Transfer-Encoding: chunked\r\n")
        cases = [
            (chunked + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body), 202),
            (post("big", body=b'{"x":"' + b"y" * 2000 + b'"}'), 413),
            (post("wrong-method").replace(b"POST", b"PATCH", 1), 405),
        ]
        for raw, expected in cases:
            reader, writer = await connect(broker)
            writer.write(raw)
            assert (await read_response(reader))[0] == expected, raw[:40]
            writer.close()
        await subscriber.wait_for(lambda: len(subscriber.at("/sink")) == 1)
        assert subscriber.at("/sink")[0].event.get_id() == "chunked"


async def test_connection_close_and_http_1_0_close_after_the_answer(make_broker):
    async with make_broker() as broker:
        for raw in (post("c1", extra="Connection: close\r\n"), post("c2").replace(b"HTTP/1.1", b"HTTP/1.0", 1)):
            reader, writer = await connect(broker)
            writer.write(raw)
            status, headers, _ = await read_response(reader)
            assert status == 202 and headers["connection"] == "close"
            assert await asyncio.wait_for(reader.read(), 5) == b""  # the server closed it
            writer.close()


@pytest.mark.parametrize(
    ("head", "status"),
    [
        ("POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nContent-Length: 2", 400),  # repeated: smuggling
        ("POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked", 400),
        ("POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nX-A: 1\nTransfer-Encoding: chunked", 400),  # LF
        ("POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nX-A: a\rb", 400),  # bare CR
        ("POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nX-A: a\x00b", 400),
        ("POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nce-id: a\x01b", 400),
        ("POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n folded", 400),
        ("POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length : 2", 400),
        ("POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -2", 400),
        ("POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: \u00b2", 400),  # a digit to str.isdigit, not to HTTP
        ("POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: \u00a07", 400),
        ("POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " + "9" * 5000, 400),
        ("POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nX-Long: " + "a" * 9000, 431),
        ("POST / HTTP/2\r\nHost: 127.0.0.1\r\nContent-Length: 2", 400),
        ("POST /a/b\x7f HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2", 400),
        ("PUT / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a\x00b", 400),  # whatever the method: unreadable is refused
        ("POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nExpect: 100-continue", None),  # aiohttp's
        ("POST / HTTP/1.1\r\nContent-Length: 2", None),  # HTTP/1.1 without Host
        ("POST  / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2", None),
        ("POST /%73ources/minio HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2", None),  # aiohttp's router decodes it
        ("POST /a/b/c HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2", None),
        ("PUT / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2", None),
    ],
)
def test_heads_the_lean_path_refuses_or_hands_to_aiohttp(head, status):
    """llhttp cannot read it: refused here (the status); readable but not a plain ingress POST: aiohttp's (None)."""
    raw = head.encode("latin-1")  # byte for byte: \u00b2 is the byte 0xb2
    if status is None:
        assert _parse_head(raw, lambda path: is_ingress_path(path, frozenset())) is None
    else:
        with pytest.raises(KnflowError) as refused:
            _parse_head(raw, lambda path: is_ingress_path(path, frozenset()))
        assert refused.value.status == status


async def test_an_unreadable_head_is_answered_from_the_error_table_and_the_connection_closed(make_broker):
    async with make_broker() as broker:
        for head, status, says in (
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400, "Content-Length"),
            (b"GET /triggers HTTP/1.1\r\nHost: h\r\nX-A: a\x00b\r\n\r\n", 400, "Invalid header value char"),
            (b"POST / HTTP/1.1\r\nHost: h\nContent-Length: 2\n\n{}", 400, "ends without CR"),
            (b"POST / HTTP/1.1\r\nX-Big: " + b"a" * (MAX_HEAD + 10), 431, f"limit of {MAX_HEAD} bytes"),
        ):
            reader, writer = await connect(broker)
            writer.write(head)
            got, headers, body = await read_response(reader)
            assert (got, headers["content-type"], headers["connection"]) == (status, "application/json", "close")
            assert says in orjson.loads(body)["error"], body
            assert await asyncio.wait_for(reader.read(), 5) == b""  # the server closed it
            writer.close()


def test_a_plain_head_is_taken_with_utf8_values():
    raw = "POST /ns/b?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 7\r\nce-subject: café ☕".encode()
    head = _parse_head(raw, lambda path: is_ingress_path(path, frozenset()))
    assert head is not None and head.length == 7 and head.keep_alive and head.headers["ce-subject"] == "café ☕"


@pytest.mark.parametrize(
    ("raw", "probes", "taken"),
    [
        (b"GET /health/readiness HTTP/1.1\r\nHost: 127.0.0.1", False, False),  # a server without a probe
        (b"GET /health/readiness HTTP/1.1\r\nHost: 127.0.0.1", True, True),
        (b"HEAD /health/liveness HTTP/1.0", True, True),
        (b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0", True, True),
        (b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2", True, False),  # a probe has no body
        (b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked", True, False),
        (b"PUT /health/readiness HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0", True, False),
    ],
)
def test_bodiless_gets_and_heads_are_taken_only_by_a_server_with_a_probe(raw, probes, taken):
    head = _parse_head(raw, lambda path: True, probes)
    assert (head is not None) == taken
    if head is not None:
        assert head.length == 0 and head.method == raw.split(b" ")[0].decode() and head.raw.endswith(b"\r\n\r\n")


async def test_utf8_attribute_values_are_stored_as_sent(make_broker, subscriber):
    url = f"{subscriber.url}/sink"
    async with make_broker([Trigger("t", url)]) as broker:
        reader, writer = await connect(broker)
        writer.write(post("utf8", extra="ce-subject: café ☕\r\n"))
        assert (await read_response(reader))[0] == 202
        writer.close()
        await subscriber.wait_for(lambda: len(subscriber.at("/sink")) == 1)
        assert subscriber.at("/sink")[0].event.get_subject() == "café ☕"


async def test_a_client_that_does_not_read_its_answers_is_pushed_back_and_loses_nothing(make_broker):
    async with make_broker() as broker:
        reader, writer = await connect(broker)
        total = 20_000  # invalid events: answered without a log append, so the answers (~6 MB) pile up fast
        writer.write(b"".join(post(f"bp-{i}", body=b"{not json") for i in range(total)))
        connections = broker._ingress_server.connections  # answered until the buffers fill, then no more is read
        await eventually(lambda: any(c._write_paused for c in connections), 20, "the broker to stop answering")
        buffered = sum(c.transport.get_write_buffer_size() for c in broker._ingress_server.connections)
        assert buffered < 1024 * 1024
        statuses = [(await read_response(reader))[0] for _ in range(total)]
        assert statuses == [400] * total
        writer.close()


async def test_idle_connections_are_closed_but_a_slow_request_is_not(make_broker, monkeypatch):
    monkeypatch.setattr("eventing.ingress.IDLE_TIMEOUT_S", 0.5)
    async with make_broker() as broker:
        idle_reader, idle_writer = await connect(broker)
        slow_reader, slow_writer = await connect(broker)
        data = post("slow")
        for i in range(0, len(data), len(data) // 10 + 1):  # a request arriving over ~1.2 s
            slow_writer.write(data[i : i + len(data) // 10 + 1])
            await asyncio.sleep(0.12)
        assert (await read_response(slow_reader))[0] == 202
        assert await asyncio.wait_for(idle_reader.read(), 5) == b""  # closed by the sweep
        idle_writer.close()
        slow_writer.close()


async def test_http_1_0_keep_alive_is_confirmed_and_kept(make_broker):
    async with make_broker() as broker:
        reader, writer = await connect(broker)
        for i in range(2):
            writer.write(post(f"k10-{i}", extra="Connection: keep-alive\r\n").replace(b"HTTP/1.1", b"HTTP/1.0", 1))
            status, headers, _ = await read_response(reader)
            assert status == 202 and headers["connection"] == "keep-alive"
        writer.close()


def test_ingress_paths_leave_other_routes_alone():
    taken = frozenset({"sources", "triggers", "health", "events"})
    assert is_ingress_path("/", taken) and is_ingress_path("/default/knflow", taken)
    assert not any(is_ingress_path(p, taken) for p in ("/sources/minio", "/triggers/x", "//x", "/a/", "/a"))
