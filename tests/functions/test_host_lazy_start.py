"""A fresh function host answers its probes, metrics and first event without importing aiohttp; aiohttp's server is
imported and built only when a request needs it (cold start: Knative probes a pod before its first event)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from eventing.bindings import to_http_binary
from eventing.events import new_event
from infra.http1 import Http1Pool
from infra.localservices import free_port
from tests.eventually import eventually

pytestmark = pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads a process's mapped libraries")


def aiohttp_loaded(pid: int) -> bool:
    """Whether process ``pid`` has imported aiohttp: its compiled HTTP parser is then mapped into the process."""
    return "/aiohttp/" in Path(f"/proc/{pid}/maps").read_text()


async def raw_request(port: int, request: bytes) -> bytes:
    """The whole answer to one request sent on its own connection (closed by the request's ``Connection: close``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        return await asyncio.wait_for(reader.read(), 20)
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def started_host(target: str, tmp_path: Path, **env: str) -> AsyncIterator[tuple[int, Http1Pool, str]]:
    """A host of ``target`` in a process of its own, once it answers its readiness probe: its pid, a pool, its URL."""
    port = free_port()
    environ = {**os.environ, "LISTEN_ADDRESS": f"127.0.0.1:{port}", "KNFLOW_DATA_DIR": str(tmp_path), **env}
    environ["PYTHONPATH"] = "."
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "functions.runtime.host", target, env=environ)
    pool = Http1Pool()
    url = f"http://127.0.0.1:{port}"
    try:

        async def ready() -> bool:
            try:
                return (await pool.request("GET", f"{url}/health/readiness", {}, b"", 5)).status == 200
            except OSError:
                return False

        await eventually(ready, 30, "the host to answer its readiness probe")
        yield process.pid, pool, url
    finally:
        await pool.close()
        if process.returncode is None:
            process.terminate()
            await asyncio.wait_for(process.wait(), 20)


async def test_a_fresh_host_answers_probes_metrics_and_an_event_without_importing_aiohttp(tmp_path):
    async with started_host("echo", tmp_path) as (pid, pool, url):
        port = int(url.rsplit(":", 1)[1])
        liveness = await pool.request("GET", f"{url}/health/liveness", {}, b"", 10)
        head = await pool.request("HEAD", f"{url}/health/liveness", {}, b"", 10)
        metrics = await pool.request("GET", f"{url}/metrics", {}, b"", 10)
        headers, body = to_http_binary(new_event("test.echo", "/tests", {"n": 1}))
        reply = await pool.post(f"{url}/", headers, body, 10)
        assert liveness.status == 200 and liveness.headers["content-type"] == "text/plain; charset=utf-8"
        assert (head.status, head.data, head.headers["content-length"]) == (200, b"", str(len(liveness.data)))
        assert metrics.status == 200 and b"knflow_function_cold_starts_total" in metrics.data
        assert (reply.status, reply.headers["ce-type"]) == (200, "dev.knflow.echo.reply")
        assert not aiohttp_loaded(pid)
        # a request the lean path does not take brings aiohttp in, and aiohttp answers it as before
        odd = await raw_request(port, b"GET /other HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert odd.startswith(b"HTTP/1.1 400 "), odd
        assert aiohttp_loaded(pid)


async def test_a_host_emits_to_its_sink_without_importing_aiohttp(tmp_path):
    emitted: list[str] = []

    async def sink(request: web.Request) -> web.Response:
        emitted.append(request.headers["ce-type"])
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/", sink)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sink_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", sink_port).start()
    try:
        sink_url = f"http://127.0.0.1:{sink_port}/"
        async with started_host("tests/functions/fixtures/behaviours.py", tmp_path, K_SINK=sink_url) as (
            pid,
            pool,
            url,
        ):
            headers, body = to_http_binary(new_event("test.emit", "/tests", {"count": 2}))
            reply = await pool.post(f"{url}/", headers, body, 20)
            assert reply.status == 200 and emitted == ["test.fanout", "test.fanout"]
            assert not aiohttp_loaded(pid)
    finally:
        await runner.cleanup()
