"""The broker's small HTTP/1.1 delivery client against a real aiohttp server: framing, keep-alive, failures."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from infra.http1 import Http1Pool
from infra.localservices import free_port
from tests.eventually import eventually
from tests.webapps import served


@pytest.fixture
async def server():
    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        kind = request.match_info["kind"]
        if kind == "nocontent":
            return web.Response(status=204)
        if kind == "chunked":
            resp = web.StreamResponse(status=200)
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for part in (b"ab", b"", b"cd" * 5000):
                if part:
                    await resp.write(part)
            await resp.write_eof()
            return resp
        if kind == "close":
            return web.Response(status=500, body=b"bye", headers={"Connection": "close"})
        if kind == "slow":
            await asyncio.sleep(1)
        return web.Response(status=200, body=body[::-1], headers={"ce-id": "1"})

    app = web.Application()
    app.router.add_post("/{kind}", handle)
    async with served(app, keepalive_timeout=0.3) as url:
        yield url


async def test_framing_keepalive_and_failures(server):
    pool = Http1Pool()
    try:
        echo = await pool.post(f"{server}/echo?x=1", {"content-type": "text/plain"}, b"hello", 5)
        assert (echo.status, echo.data, echo.headers["ce-id"]) == (200, b"olleh", "1")
        assert (await pool.post(f"{server}/nocontent", {}, b"x", 5)).status == 204
        chunked = await pool.post(f"{server}/chunked", {}, b"", 5)
        assert chunked.data == b"ab" + b"cd" * 5000
        closed = await pool.post(f"{server}/close", {}, b"", 5)
        assert (closed.status, closed.data) == (500, b"bye")
        results = await asyncio.gather(*(pool.post(f"{server}/echo", {}, str(i).encode(), 5) for i in range(50)))
        assert [r.data for r in results] == [str(i).encode()[::-1] for i in range(50)]
        idle = [c for conns in pool._idle.values() for c in conns]
        await eventually(lambda: all(c.closed for c in idle), 5, "the server to close the idle connections")
        assert (await pool.post(f"{server}/echo", {}, b"ab", 5)).data == b"ba"
        with pytest.raises(TimeoutError):
            await pool.post(f"{server}/slow", {}, b"", 0.2)
        with pytest.raises(OSError):
            await pool.post(f"http://127.0.0.1:{free_port()}/", {}, b"", 2)
    finally:
        await pool.close()


async def test_over_a_unix_socket_any_method_with_headers_as_sent_and_no_body_for_head(tmp_path):
    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(body=request.method.encode() + body, headers={"X-Seen-Host": request.host, "ce-Id": "7"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    socket = str(tmp_path / "w.sock")
    await web.UnixSite(runner, socket).start()
    pool = Http1Pool(socket)
    try:
        got = await pool.request("PUT", "http://fn-a/x", {"Content-Type": "text/plain"}, b"!", None)
        assert (got.status, got.data, got.headers["x-seen-host"]) == (200, b"PUT!", "fn-a")
        assert ("ce-Id", "7") in got.raw_headers  # names as the server sent them
        head = await pool.request("HEAD", "http://fn-a/x", {}, b"", 5.0)  # Content-Length: 4, and no body
        assert (head.status, head.data) == (200, b"")
        again = await pool.request("GET", "http://fn-a/x", {}, b"", 5.0)  # the HEAD left the connection usable
        assert again.data == b"GET"
        # a value a lean server decoded with surrogateescape (bytes that are not UTF-8) goes out as those bytes
        odd = b"i\xbb8".decode("utf-8", "surrogateescape")
        echoed = await pool.request("POST", "http://fn-a/x", {"ce-id": odd}, b"", 5.0)
        assert echoed.status == 200
    finally:
        await pool.close()
        await runner.cleanup()


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nxyz", "switched"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nab", "Content-Length"),
        (b"HTTP/1.1 2x0 OK\r\n\r\n", "malformed HTTP response"),
    ],
)
async def test_an_answer_that_is_not_http_fails_the_request_and_is_not_reused(answer, says):
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        await reader.read()  # until the client closes the connection
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    pool = Http1Pool()
    try:
        with pytest.raises(ConnectionError, match=says):
            await pool.post(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/", {}, b"", 5)
        assert not [c for conns in pool._idle.values() for c in conns]
    finally:
        await pool.close()
        server.close()
