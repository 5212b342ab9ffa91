"""The same bad request gets the same error answer (status, content type, body) on a server's lean HTTP/1.1 path and
on its aiohttp path, on every server that has both: both answer through ``infra.http.error_answer``.

A POST with a Content-Length is the lean path's (or handed over by it); the same POST chunked goes to aiohttp."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import orjson
import pytest

from eventing.broker import BrokerServer
from functions.runtime.host import FunctionHost
from functions.runtime.loader import load_function
from functions.runtime.runner import Runner
from infra.errors import InvalidRequest
from infra.http import error_answer
from infra.settings import load_settings
from infra.store import open_store
from serving.gateway import Gateway
from serving.registry import ModelRegistry
from tests.serving.helpers import identity_onnx
from tests.unguarded import UNGUARDED

LIMIT = 1000
EVENT = {"ce-specversion": "1.0", "ce-id": "e-1", "ce-source": "/tests", "ce-type": "test.bad"}
MALFORMED = ({**EVENT, "Content-Type": "application/json"}, b'{"not": json')
WRONG_TYPE = ({"Content-Type": "text/plain"}, b"hello")
OVERSIZED = ({**EVENT, "Content-Type": "application/json"}, b'{"x":"' + b"y" * 2 * LIMIT + b'"}')

Answer = tuple[int, str, bytes]


async def exchange(port: int, path: str, headers: dict[str, str], body: bytes, chunked: bool) -> Answer:
    """One POST over a fresh connection, framed with a Content-Length or chunked; status, content type, body."""
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{lines}{framing}\r\n\r\n"
    payload = (b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)) if chunked else body
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode() + payload)
        raw = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    top, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = top.decode("latin-1").split("\r\n")
    got = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    return (
        int(status_line.split(" ")[1]),
        got.get("content-type", ""),
        rest[: int(got.get("content-length", len(rest)))],
    )


async def both_paths(port: int, path: str, request: tuple[dict[str, str], bytes]) -> tuple[Answer, Answer]:
    headers, body = request
    return await exchange(port, path, headers, body, False), await exchange(port, path, headers, body, True)


def reason(answer: Answer) -> str:
    assert answer[1] == "application/json", answer
    return orjson.loads(answer[2])["error"]


Case = tuple[str, tuple[dict[str, str], bytes], int, str]


async def assert_alike(port: int, cases: list[Case]) -> None:
    for path, request, status, says in cases:
        lean, aio = await both_paths(port, path, request)
        assert lean == aio, (path, request[0])
        assert lean[0] == status and says in reason(lean), (path, lean)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "KNFLOW_DATA_DIR": str(tmp_path / "data"),
        "KNFLOW_ARTIFACTS": f"file://{tmp_path / 'artifacts'}",
        "KNFLOW_BROKER": f"embedded://{tmp_path / 'events'}",
        "KNFLOW_LOG_FORMAT": "text",
        **UNGUARDED,
    }


@pytest.fixture
async def started() -> AsyncIterator[Callable[[Awaitable[object], Callable[[], Awaitable[object]]], Awaitable[None]]]:
    stops: list[Callable[[], Awaitable[object]]] = []

    async def start(starting: Awaitable[object], stop: Callable[[], Awaitable[object]]) -> None:
        await starting
        stops.append(stop)

    yield start
    for stop in reversed(stops):
        await stop()


async def test_the_broker_answers_bad_events_alike_on_both_paths(env, started):
    broker = BrokerServer(load_settings({**env, "KNFLOW_EVENTING_MAX_EVENT_BYTES": str(LIMIT)}), port=0)
    await started(broker.start(), broker.stop)
    await assert_alike(
        broker.port,
        [
            ("/", MALFORMED, 400, "not valid JSON"),
            ("/", WRONG_TYPE, 415, "is not accepted"),  # the guard's answer to a change that is not JSON
            ("/", OVERSIZED, 413, f"larger than the limit of {LIMIT} bytes"),
            ("/no/such/route", MALFORMED, 404, "Not Found"),
        ],
    )


async def test_the_function_host_answers_bad_events_alike_on_both_paths(env, started):
    settings = load_settings({**env, "KNFLOW_FUNCTIONS_MAX_REQUEST_BYTES": str(LIMIT)})
    host = FunctionHost(load_function("echo"), settings)
    await started(host.start(["127.0.0.1:0"]), host.stop)
    port = int(host._lean.addresses[0][1])  # type: ignore[union-attr]
    await assert_alike(
        port,
        [
            ("/", MALFORMED, 400, "not valid JSON"),
            ("/", WRONG_TYPE, 400, "not a CloudEvent"),
            ("/", OVERSIZED, 413, f"larger than the limit of {LIMIT} bytes"),
        ],
    )


async def test_the_function_runner_answers_bad_deliveries_alike_on_both_paths(env, started):
    runner = Runner(load_settings({**env, "KNFLOW_FUNCTIONS_MAX_REQUEST_BYTES": str(LIMIT)}))
    await started(runner.start(0), runner.stop)
    assert runner.port is not None
    await assert_alike(
        runner.port,
        [
            ("/functions/echo", MALFORMED, 400, "not valid JSON"),  # the worker's host answers, the runner relays
            ("/functions/echo", WRONG_TYPE, 415, "is not accepted"),  # the guard's, as on the broker
            ("/functions/echo", OVERSIZED, 413, f"larger than the limit of {LIMIT} bytes"),
            ("/functions/nope", MALFORMED, 404, "no function named 'nope'"),
        ],
    )


async def test_the_gateway_answers_bad_inference_alike_on_both_paths(env, started):
    settings = load_settings({**env, "KNFLOW_SERVING_MAX_REQUEST_BYTES": str(LIMIT)})
    store = open_store(settings.artifacts)
    ModelRegistry(store).register("ident", identity_onnx())
    gateway = Gateway(settings, store)
    await started(gateway.start(port=0, grpc_port=0), gateway.stop)
    deploy = await exchange(
        gateway.port, "/v1/models/ident/revisions", {"Content-Type": "application/json"}, b"{}", False
    )
    assert deploy[0] == 201, deploy
    v2 = {"Content-Type": "application/json"}
    await assert_alike(
        gateway.port,
        [
            ("/v2/models/ident/infer", (v2, b'{"inputs": "x"}'), 400, "inputs"),  # the replica's, relayed
            ("/v2/models/ident/infer", ({"Content-Type": "text/plain"}, b"hello"), 400, "not valid JSON"),
            ("/v2/models/ident/infer", ({**v2, "Inference-Header-Content-Length": "x"}, b"{}"), 400, "whole number"),
            ("/v2/models/nope/infer", (v2, b'{"inputs": []}'), 404, "model 'nope' is not deployed"),
            ("/v2/models/nope/infer", ({"Content-Type": "text/plain"}, b"hello"), 404, "is not deployed"),
            ("/v2/models/nope/infer", (v2, b"x" * 2 * LIMIT), 413, f"larger than the limit of {LIMIT} bytes"),
        ],
    )


def test_every_error_answer_has_one_body_shape_and_json_type():
    status, body, headers = error_answer(InvalidRequest("bad é"))
    assert (status, orjson.loads(body), headers["Content-Type"]) == (400, {"error": "bad é"}, "application/json")
    assert error_answer(asyncio.CancelledError())[:2] == (503, b'{"error":"the server is stopping"}')
    assert error_answer(ZeroDivisionError("secret"))[:2] == (500, b'{"error":"ZeroDivisionError"}')
