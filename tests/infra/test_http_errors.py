"""Every HTTP client of knflow's servers turns an error answer into the same knflow error (``error_from_answer``),
carrying the server's reason, and a server that does not answer into ``Unavailable``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from eventing.client import publish, publish_async
from eventing.events import new_event
from infra.asyncclient import AsyncClient
from infra.errors import Conflict, InvalidRequest, KnflowError, NotFound, Unavailable
from infra.httpclient import JsonClient, error_from_answer
from infra.localservices import free_port
from knflow.client import Client
from knflow.follow import History
from serving.client import AsyncServingClient, ServingClient

KINDS = {400: InvalidRequest, 404: NotFound, 409: Conflict, 429: Unavailable, 503: Unavailable}

Caller = Callable[[str], Awaitable[object]]


def sync(call: Callable[[str], object]) -> Caller:
    return lambda url: asyncio.to_thread(call, url)


async def async_client(url: str) -> object:
    async with AsyncClient(url) as client:
        return await client.call("GET", "/anything")


async def async_serving(url: str) -> object:
    async with AsyncServingClient(url) as client:
        return await client.describe("m")


CALLERS: dict[str, Caller] = {
    "JsonClient": sync(lambda url: JsonClient(url).call("GET", "/anything")),
    "AsyncClient": async_client,
    "ServingClient": sync(lambda url: ServingClient(url).describe("m")),
    "AsyncServingClient": async_serving,
    "knflow.Client": sync(lambda url: Client(url, token="", namespace="").models()),
    "History": sync(lambda url: History(url).page()),
    "publish": sync(lambda url: publish(url + "/", new_event("test.ping", "/tests", {}))),
    "publish_async": lambda url: publish_async(url + "/", new_event("test.ping", "/tests", {})),
}


class Answering:
    """A server answering every request with the status ``status`` says and an error reason naming it."""

    def __init__(self) -> None:
        self.status = 200
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        return web.json_response({"error": f"told to answer {self.status}"}, status=self.status)


@pytest.fixture
async def answering() -> AsyncIterator[Answering]:
    server = Answering()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    server.url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("name", sorted(CALLERS))
async def test_every_client_maps_an_error_answer_to_the_same_knflow_error(name: str, answering: Answering) -> None:
    for status, kind in KINDS.items():
        answering.status = status
        with pytest.raises(KnflowError) as raised:
            await CALLERS[name](answering.url)
        assert type(raised.value) is kind, (name, status, raised.value)
        assert raised.value.status == status
        assert f"told to answer {status}" in str(raised.value), (name, status)
        assert raised.value.retryable == (status in (429, 503)), (name, status)


@pytest.mark.parametrize("name", sorted(CALLERS))
async def test_every_client_says_unavailable_when_nothing_answers(name: str) -> None:
    with pytest.raises(Unavailable, match="is not reachable"):
        await CALLERS[name](f"http://127.0.0.1:{free_port()}")


def test_an_error_answer_without_a_json_reason_keeps_its_text() -> None:
    error = error_from_answer("GET /x", 409, b"taken")
    assert isinstance(error, Conflict) and str(error) == "GET /x: taken"
