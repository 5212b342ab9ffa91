"""``JsonClient``'s calls beyond JSON: raw bodies with their own type, any answer from ``send``, a timeout per call,
and ``split_url`` for callers given a whole URL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from infra.errors import Unavailable
from infra.httpclient import JsonClient, split_url
from infra.localservices import free_port


@pytest.fixture
async def echo() -> AsyncIterator[str]:
    """Answers 418 with the request's path, query and content type; ``/slow`` answers after two seconds."""

    async def handle(request: web.Request) -> web.Response:
        if request.path == "/slow":
            await asyncio.sleep(2)
        seen = {"path": request.path_qs, "type": request.headers.get("content-type"), "body": await request.text()}
        return web.json_response(seen, status=418, headers={"x-seen": "yes"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_send_returns_any_answer_with_its_headers_and_keeps_a_raw_body_s_own_type(echo: str) -> None:
    server, path = split_url(echo + "/functions/f?x=1")
    answer = await asyncio.to_thread(
        JsonClient(server).send, "POST", path, b"a=b", headers={"content-type": "text/plain"}
    )
    assert answer.status == 418 and answer.headers["x-seen"] == "yes"
    assert answer.data == b'{"path": "/functions/f?x=1", "type": "text/plain", "body": "a=b"}'


async def test_a_timeout_for_one_call_overrides_the_client_s(echo: str) -> None:
    client = JsonClient(echo, timeout=30.0, name="slowpoke")
    with pytest.raises(Unavailable, match=f"slowpoke {echo} is not reachable"):
        await asyncio.to_thread(client.call, "GET", "/slow", timeout=0.2)


def test_split_url_keeps_the_path_and_query_and_gives_a_bare_server_the_root() -> None:
    assert split_url("http://h:1/a/b?q=1") == ("http://h:1", "/a/b?q=1")
    assert split_url("http://h:1") == ("http://h:1", "/")
