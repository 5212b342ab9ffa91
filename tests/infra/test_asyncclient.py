"""``AsyncClient`` against real servers: any answer from ``send``, error answers as knflow's errors from ``call``,
no answer as ``Unavailable``; ``http://`` and a Unix socket on the lean pool, ``https://`` on aiohttp only."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp import web

from infra.asyncclient import AsyncClient
from infra.errors import Conflict, InvalidRequest, KnflowError, NotFound, PayloadTooLarge, Unavailable
from infra.localservices import free_port
from tests.tls import tls_contexts

KINDS = {
    400: InvalidRequest,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    418: InvalidRequest,
    429: Unavailable,
    500: KnflowError,
    503: Unavailable,
}


async def handle(request: web.Request) -> web.StreamResponse:
    """``/status/N`` answers N with an error reason naming it; ``/slow`` answers after 0.6 s; anything else
    echoes the method, path, body and the headers the client sent."""
    if request.path.startswith("/status/"):
        status = int(request.path.rsplit("/", 1)[1])
        return web.json_response({"error": f"told to answer {status}"}, status=status)
    if request.path == "/slow":
        await asyncio.sleep(0.6)
    seen = {
        "method": request.method,
        "path": request.path_qs,
        "body": (await request.read()).decode(),
        "token": request.headers.get("authorization"),
        "type": request.headers.get("content-type"),
    }
    return web.json_response(seen, headers={"X-Seen": "yes"})


async def serve(site: type[web.BaseSite] = web.TCPSite, **where: object) -> AsyncIterator[web.AppRunner]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await site(runner, **where).start()  # type: ignore[arg-type]  # each site class takes its own address keywords
    try:
        yield runner
    finally:
        await runner.cleanup()


@pytest.fixture
async def server() -> AsyncIterator[str]:
    port = free_port()
    async for _ in serve(host="127.0.0.1", port=port):
        yield f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("status", sorted(KINDS))
async def test_an_error_answer_raises_the_knflow_error_of_its_status_with_the_server_s_reason(
    server: str, status: int
) -> None:
    async with AsyncClient(server) as client:
        with pytest.raises(KnflowError) as raised:
            await client.call("GET", f"/status/{status}")
    assert type(raised.value) is KINDS[status]
    assert str(raised.value) == f"GET /status/{status}: told to answer {status}"
    assert raised.value.status == status
    assert raised.value.retryable == (status in (429, 500, 503))


async def test_send_returns_any_answer_with_the_client_s_headers_and_a_call_s_own(server: str) -> None:
    async with AsyncClient(server, headers={"Authorization": "Bearer t"}) as client:
        answer = await client.send("PUT", "/a?x=1", b"hi", headers={"Content-Type": "text/plain"})
        refused = await client.send("GET", "/status/409")
        called = await client.call("POST", "/json", {"n": 1})
    async with AsyncClient() as anywhere:  # a client for whole URLs
        whole = await anywhere.call("DELETE", server + "/whole")
    assert answer.status == 200 and answer.headers["x-seen"] == "yes" and ("X-Seen", "yes") in answer.raw_headers
    assert answer.reason == "OK"
    seen = {"method": "PUT", "path": "/a?x=1", "body": "hi", "token": "Bearer t", "type": "text/plain"}
    assert orjson.loads(answer.data) == seen
    assert (refused.status, orjson.loads(refused.data)) == (409, {"error": "told to answer 409"})
    assert called == {**seen, "method": "POST", "path": "/json", "body": '{"n":1}', "type": "application/json"}
    assert whole["method"] == "DELETE" and whole["token"] is None


async def test_a_server_that_does_not_listen_is_unavailable_and_retryable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with AsyncClient(url, name="gateway") as client:
        with pytest.raises(Unavailable, match=f"^gateway {url} is not reachable: ConnectionRefusedError") as raised:
            await client.call("GET", "/v1/models")
    assert raised.value.retryable and raised.value.status == 503
    assert isinstance(raised.value.__cause__, ConnectionRefusedError)  # what the transport said, for who needs it


async def test_a_call_that_outlasts_its_timeout_is_unavailable_and_a_call_s_timeout_overrides_the_client_s(
    server: str,
) -> None:
    async with AsyncClient(server, timeout=0.2, name="slowpoke") as client:
        with pytest.raises(Unavailable, match=f"^slowpoke {server} is not reachable: timed out after 0.2s$"):
            await client.send("GET", "/slow")
        assert (await client.send("GET", "/slow", timeout=5)).status == 200
    async with AsyncClient(server, timeout=None) as unbounded:
        assert (await unbounded.send("GET", "/slow")).status == 200


async def test_over_a_unix_socket_every_url_goes_to_the_socket(tmp_path) -> None:
    socket = str(tmp_path / "s.sock")
    async for _ in serve(web.UnixSite, path=socket):
        async with AsyncClient("http://fn", unix_socket=socket) as client:
            assert (await client.call("POST", "/x", {"a": 1}))["path"] == "/x"
            with pytest.raises(NotFound, match="told to answer 404"):
                await client.call("GET", "/status/404")
    async with AsyncClient("http://fn", unix_socket=str(tmp_path / "gone.sock"), name="worker") as client:
        with pytest.raises(Unavailable, match=r"^worker http://fn is not reachable: FileNotFoundError"):
            await client.send("GET", "/")


async def test_https_goes_over_aiohttp_with_the_same_errors() -> None:
    served, trusted = tls_contexts()
    port = free_port()
    async for _ in serve(host="127.0.0.1", port=port, ssl_context=served):
        url = f"https://127.0.0.1:{port}"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusted)) as session:
            async with AsyncClient(url, session=session, headers={"Authorization": "Bearer t"}) as client:
                assert await client.call("GET", "/a") == {
                    "method": "GET", "path": "/a", "body": "", "token": "Bearer t", "type": "application/json"
                }  # fmt: skip
                with pytest.raises(Conflict, match=r"^GET /status/409: told to answer 409$"):
                    await client.call("GET", "/status/409")
                answer = await client.send("GET", "/b")
                assert answer.headers["x-seen"] == "yes" and ("X-Seen", "yes") in answer.raw_headers
            assert not session.closed  # the caller's session stays the caller's
        async with AsyncClient(url, name="store") as untrusting:  # its own session, which knows no such authority
            with pytest.raises(Unavailable, match=f"^store {url} is not reachable: ClientConnectorCertificateError"):
                await untrusting.send("GET", "/a")
        async with AsyncClient(url.replace("https", "http")) as plain:  # the lean pool does not speak TLS
            with pytest.raises(Unavailable):
                await plain.send("GET", "/a")


async def test_plain_http_calls_do_not_import_aiohttp(server: str) -> None:
    script = (
        "import asyncio, sys\n"
        "from infra.asyncclient import AsyncClient\n"
        "async def main():\n"
        f"    async with AsyncClient({server!r}) as client:\n"
        "        print((await client.send('GET', '/x')).status, 'aiohttp' in sys.modules)\n"
        "asyncio.run(main())\n"
    )
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(child.communicate(), 60)
    assert out.split() == [b"200", b"False"]
