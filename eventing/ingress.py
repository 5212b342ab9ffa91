"""The broker's ingress server: a lean HTTP/1.1 path for POSTed events, aiohttp for every other request.

aiohttp's per-request machinery cost the broker more CPU than storing and delivering an event.
Each connection starts on ``IngressProtocol``, which answers the common request itself: a POST
to an ingress path with a ``Content-Length`` body no larger than the limit, one at a time per
connection (pipelined requests wait in order). At the first request it does not take (another
path or method, a chunked body, ``Expect``, a malformed or oversized head) it hands the
connection, with the bytes already read, to aiohttp's ``RequestHandler``, which then serves the
rest of that connection: the admin API, sources, and the strict answers to odd requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate

Accept = Callable[[dict[str, str], bytes], Awaitable[tuple[int, bytes]]]

MAX_HEAD = 16 * 1024
IDLE_TIMEOUT_S = 75.0  # aiohttp's keep-alive default: an idle connection is closed after this
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_REASONS = {202: "Accepted", 400: "Bad Request", 413: "Payload Too Large", 500: "Internal Server Error"}
_REASONS |= {503: "Service Unavailable"}


class _Date:
    """The ``Date`` header value, formatted at most once a second."""

    def __init__(self) -> None:
        self._second = 0
        self._value = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second, self._value = now, formatdate(now, usegmt=True).encode()
        return self._value


class IngressProtocol(asyncio.Protocol):
    """One client connection: ingress POSTs answered here, the connection handed to aiohttp at anything else."""

    def __init__(self, server: IngressServer):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.idle_since = time.monotonic()
        self.busy = False
        self._buf = bytearray()
        self._paused = False
        self._done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._done = True
        self.server.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if not self.busy:
            self._next()
        elif len(self._buf) > self.server.max_body + MAX_HEAD and not self._paused:
            self._paused = True  # a pipelining client is far ahead: let TCP push back
            self.transport.pause_reading()  # type: ignore[union-attr]

    def _next(self) -> None:
        """Take the next whole request from the buffer, if there is one."""
        if self._done:
            return
        if self._paused:
            self._paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        buf = self._buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                self._hand_over()
            return
        head = _parse_head(bytes(buf[:end]), self.server.is_ingress)
        if head is None or head[1] > self.server.max_body:
            self._hand_over()  # aiohttp gives the precise answer (404, 405, 413, 400 ...)
            return
        headers, length, keep_alive = head
        total = end + 4 + length
        if len(buf) < total:
            return
        body = bytes(buf[end + 4 : total])
        del buf[:total]
        self.busy = True
        task = asyncio.ensure_future(self.server.accept(headers, body))
        task.add_done_callback(lambda t: self._respond(t, keep_alive))

    def _respond(self, task: asyncio.Future, keep_alive: bool) -> None:
        self.busy = False
        self.idle_since = time.monotonic()
        if self._done:
            return
        try:
            status, body = task.result()
        except Exception as exc:  # the accept callback answers errors itself; this is a bug, not a client's fault
            status, body = 500, b'{"error":"' + type(exc).__name__.encode() + b'"}'
        head = b"HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Length: %d\r\n" % (
            status,
            _REASONS.get(status, "Error").encode(),
            self.server.date(),
            len(body),
        )
        if body:
            head += b"Content-Type: application/json\r\n"
        if not keep_alive:
            head += b"Connection: close\r\n"
        self.transport.write(head + b"\r\n" + body)  # type: ignore[union-attr]
        if not keep_alive:
            self._done = True
            self.transport.close()  # type: ignore[union-attr]
            return
        if self._buf:
            self._next()

    def _hand_over(self) -> None:
        """Give the connection and the bytes read so far to aiohttp for the rest of its life."""
        transport = self.transport
        assert transport is not None
        self._done = True
        self.server.connections.discard(self)
        if self._paused:
            transport.resume_reading()
        handler = self.server.fallback()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self._buf:
            handler.data_received(bytes(self._buf))
            self._buf.clear()


def _parse_head(head: bytes, is_ingress: Callable[[str], bool]) -> tuple[dict[str, str], int, bool] | None:
    """Lower-cased headers, body length and keep-alive of an ingress POST this path takes, else None."""
    lines = head.decode("latin-1").split("\r\n")
    request = lines[0].split(" ")
    if len(request) != 3 or request[0] != "POST" or request[2] not in ("HTTP/1.1", "HTTP/1.0"):
        return None
    if not is_ingress(request[1].split("?", 1)[0]):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name):
            return None  # obs-fold, whitespace before the colon, a bad name: aiohttp refuses it properly
        name = name.lower()
        if name in headers:
            if name in ("content-length", "content-type", "host", "transfer-encoding") or name.startswith("ce-"):
                return None
            headers[name] += ", " + value.strip()
        else:
            headers[name] = value.strip()
    length = headers.get("content-length")
    if length is None or not length.isdigit() or "transfer-encoding" in headers or "expect" in headers:
        return None
    connection = headers.get("connection", "").lower()
    keep_alive = "close" not in connection if request[2] == "HTTP/1.1" else "keep-alive" in connection
    return headers, int(length), keep_alive


class IngressServer:
    """Listens on ``host:port``; ``accept(headers, body)`` answers an ingress POST with ``(status, json_body)``."""

    def __init__(
        self,
        accept: Accept,
        is_ingress: Callable[[str], bool],
        fallback: Callable[[], asyncio.Protocol],
        max_body: int,
    ):
        self.accept, self.is_ingress, self.fallback, self.max_body = accept, is_ingress, fallback, max_body
        self.connections: set[IngressProtocol] = set()
        self.date = _Date()
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port (``port`` 0 picks a free one)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: IngressProtocol(self), host, port, reuse_address=True)
        self._sweeper = asyncio.create_task(self._sweep())
        return self._server.sockets[0].getsockname()[1]

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(IDLE_TIMEOUT_S / 5)
            cutoff = time.monotonic() - IDLE_TIMEOUT_S
            for conn in [c for c in self.connections if not c.busy and c.idle_since < cutoff]:
                conn.transport.close()  # type: ignore[union-attr]

    async def stop(self, grace: float = 5.0) -> None:
        """Stop listening, let requests in flight finish (up to ``grace`` seconds), close the connections."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        deadline = time.monotonic() + grace
        while any(c.busy for c in self.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            with contextlib.suppress(Exception):
                conn.transport.close()  # type: ignore[union-attr]
        if self._server is not None:
            await self._server.wait_closed()
