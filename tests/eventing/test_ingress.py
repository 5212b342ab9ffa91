"""The broker's lean ingress path over raw sockets: keep-alive, pipelining, split segments, and the hand-over
of a connection to aiohttp at the first request it does not take."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from eventing.broker import is_ingress_path
from eventing.ingress import _parse_head
from eventing.triggers import Trigger


@pytest.fixture
def backend() -> str:
    return "embedded"  # the ingress is the same for both logs; the delivery suite covers Kafka


def post(event_id: str, path: str = "/", extra: str = "", body: bytes = b'{"n":1}') -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: broker\r\nce-specversion: 1.0\r\nce-id: {event_id}\r\n"
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


async def test_a_request_split_across_segments_is_reassembled(make_broker, subscriber):
    url = f"{subscriber.url}/sink"
    async with make_broker([Trigger("t", url)]) as broker:
        reader, writer = await connect(broker)
        data = post("split", body=b'{"payload":"' + b"x" * 5000 + b'"}')
        for i in range(0, len(data), 7 if len(data) < 100 else 997):
            writer.write(data[i : i + 997])
            await writer.drain()
            await asyncio.sleep(0.001)
        assert (await read_response(reader))[0] == 202
        writer.close()
        await subscriber.wait_for(lambda: len(subscriber.at("/sink")) == 1)
        assert subscriber.at("/sink")[0].event.get_data() == {"payload": "x" * 5000}


async def test_connection_moves_to_aiohttp_at_the_first_other_request_and_keeps_working(make_broker, subscriber):
    url = f"{subscriber.url}/sink"
    async with make_broker([Trigger("t", url)]) as broker:
        reader, writer = await connect(broker)
        health = b"GET /health HTTP/1.1\r\nHost: broker\r\n\r\n"
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
    "head",
    [
        "POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2",  # repeated length: smuggling risk
        "POST / HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked",
        "POST / HTTP/1.1\r\nContent-Length: 2\r\n folded",
        "POST / HTTP/1.1\r\nContent-Length : 2",
        "POST / HTTP/1.1\r\nContent-Length: -2",
        "POST / HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue",
        "POST / HTTP/2\r\nContent-Length: 2",
        "POST  / HTTP/1.1\r\nContent-Length: 2",
        "POST /a/b/c HTTP/1.1\r\nContent-Length: 2",
    ],
)
def test_heads_the_lean_path_does_not_take(head):
    assert _parse_head(head.encode(), lambda path: is_ingress_path(path, frozenset())) is None


def test_ingress_paths_leave_other_routes_alone():
    taken = frozenset({"sources", "triggers", "health", "events"})
    assert is_ingress_path("/", taken) and is_ingress_path("/default/knflow", taken)
    assert not any(is_ingress_path(p, taken) for p in ("/sources/minio", "/triggers/x", "//x", "/a/", "/a"))
