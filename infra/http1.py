"""A small HTTP/1.1 keep-alive client: one request, one response read whole, pooled connections.

aiohttp's client costs more CPU per request than the rest of the broker's work for an event;
delivery needs only a fraction of it (plain ``http://``, POST, a small response read whole). The function
runner uses it too, over a worker's Unix socket.
Responses with Content-Length, chunked bodies, or bodies delimited by connection close are read;
1xx interim responses are skipped. A request that fails on a reused idle connection before any
response byte arrived is sent once more on a fresh connection (the server had closed it).
``https://`` URLs are not handled here (``Deliverer`` uses aiohttp for them).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Response:
    """Status, lower-cased headers, the whole body, and the headers as sent (names in their case, in order)."""

    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    raw_headers: tuple[tuple[str, str], ...] = ()


class _Connection(asyncio.Protocol):
    transport: asyncio.Transport  # set by connection_made, before create_connection returns the connection
    timer: asyncio.TimerHandle | None  # each request with a deadline sets it

    def __init__(self) -> None:
        self.closed = False
        self._buf = bytearray()
        self._waiter: asyncio.Future | None = None
        self._head_request = False
        self._reset()

    def _reset(self) -> None:
        self._status: int | None = None
        self._reason = ""
        self._headers: dict[str, str] = {}
        self._raw: list[tuple[str, str]] = []
        self._length: int | None = None
        self._chunked = False
        self._until_close = False
        self._body = bytearray()
        self.got_bytes = False
        self.reusable = False
        self.timer = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream connection's transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            if self._until_close and self._status is not None:
                self._finish(keep=False)
            else:
                self._waiter.set_exception(ConnectionResetError("connection closed before the response was complete"))

    def request(self, data: bytes, deadline: float | None, head: bool = False) -> asyncio.Future:
        """Send one request; the future fails with ``TimeoutError`` at loop time ``deadline`` (None: never). The
        answer to a ``head`` request has no body, whatever its headers say."""
        self._reset()
        self._head_request = head
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        if deadline is not None:
            self.timer = loop.call_at(deadline, _expire, waiter)  # cheaper than an asyncio.timeout per request
        self.transport.write(data)
        return waiter

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.transport.close()  # bytes nobody asked for: do not reuse
            return
        self.got_bytes = True
        self._buf += data
        try:
            self._parse()
        except (ValueError, IndexError) as exc:
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_exception(ConnectionError(f"malformed HTTP response: {exc}"))
            self.transport.close()

    def _parse(self) -> None:
        buf = self._buf
        while self._status is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            # as aiohttp and the lean server decode heads: UTF-8, other bytes as surrogates (sent back as they came)
            lines = bytes(buf[:end]).decode("utf-8", "surrogateescape").split("\r\n")
            del buf[: end + 4]
            _, status, *reason = lines[0].split(" ", 2)
            if 100 <= int(status) < 200:
                continue
            self._status, self._reason = int(status), reason[0] if reason else ""
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name, value = name.strip(), value.strip()
                self._headers[name.lower()] = value
                self._raw.append((name, value))
            if self._status in (204, 304) or self._head_request:
                self._length = 0  # no body by definition, whatever the headers say
            elif "chunked" in self._headers.get("transfer-encoding", "").lower():
                self._chunked = True
            elif "content-length" in self._headers:
                self._length = int(self._headers["content-length"])
            else:
                self._until_close = True
        if self._chunked:
            self._parse_chunks()
        elif self._length is not None and len(buf) >= self._length:
            self._body += buf[: self._length]
            del buf[: self._length]
            self._finish(keep=True)
        elif self._until_close:
            self._body += buf
            buf.clear()

    def _parse_chunks(self) -> None:
        buf = self._buf
        while True:
            line_end = buf.find(b"\r\n")
            if line_end < 0:
                return
            size = int(bytes(buf[:line_end]).split(b";", 1)[0], 16)
            if size == 0:
                trailer_end = buf.find(b"\r\n\r\n", line_end)
                if trailer_end < 0 and buf[line_end : line_end + 4] != b"\r\n\r\n":
                    return
                del buf[: (trailer_end if trailer_end >= 0 else line_end) + 4]
                self._finish(keep=True)
                return
            if len(buf) < line_end + 2 + size + 2:
                return
            self._body += buf[line_end + 2 : line_end + 2 + size]
            del buf[: line_end + 2 + size + 2]

    def _finish(self, keep: bool) -> None:
        if keep and self._headers.get("connection", "").lower() == "close":
            keep = False
        response = Response(self._status or 0, self._reason, self._headers, bytes(self._body), tuple(self._raw))
        self.reusable = keep and not self.closed
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(response)


def _cancel(timer: asyncio.TimerHandle | None) -> None:
    if timer is not None:
        timer.cancel()


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class Http1Pool:
    """Keep-alive connections per (host, port), reused most-recent first; with ``unix_socket``, every connection
    goes to that socket (the URL's host is the ``Host`` header)."""

    def __init__(self, unix_socket: str | None = None) -> None:
        self.unix_socket = unix_socket
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._targets: dict[str, tuple[str, int, bytes]] = {}

    def handles(self, url: str) -> bool:
        return url.startswith("http://")

    def _target(self, url: str) -> tuple[str, int, bytes]:
        target = self._targets.get(url)
        if target is None:
            parts = urlsplit(url)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            port = parts.port or 80
            target = (parts.hostname or "", port, f"{path} HTTP/1.1\r\nHost: {parts.netloc}\r\n".encode())
            if len(self._targets) < 10_000:
                self._targets[url] = target
        return target

    async def post(self, url: str, headers: dict[str, str], body: bytes, timeout: float) -> Response:
        """POST ``body``; raises ``TimeoutError`` or ``OSError``/``ConnectionError`` on failure."""
        return await self.request("POST", url, headers, body, timeout)

    async def request(
        self, method: str, url: str, headers: dict[str, str], body: bytes, timeout: float | None
    ) -> Response:
        """One request (``timeout`` None: wait as long as it takes); raises like ``post``."""
        host, port, start = self._target(url)
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        # header values a lean server decoded with surrogateescape go out as the bytes that came in
        lines = f"Content-Length: {len(body)}\r\n{head}\r\n".encode("utf-8", "surrogateescape")
        data = method.encode() + b" " + start + lines + body
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        is_head = method == "HEAD"
        conn, reused = await self._acquire(host, port, deadline)
        try:
            try:
                response = await conn.request(data, deadline, is_head)
            except ConnectionError:
                if not reused or conn.got_bytes:
                    raise
                _cancel(conn.timer)
                conn, _ = await self._acquire(host, port, deadline, fresh=True)  # the server had closed the idle one
                response = await conn.request(data, deadline, is_head)
        except BaseException:
            conn.transport.close()
            raise
        finally:
            _cancel(conn.timer)
        if conn.reusable:
            self._idle.setdefault((host, port), []).append(conn)
        else:
            conn.transport.close()
        return response

    async def _acquire(
        self, host: str, port: int, deadline: float | None, fresh: bool = False
    ) -> tuple[_Connection, bool]:
        idle = self._idle.get((host, port))
        while idle and not fresh:
            conn = idle.pop()
            if not conn.closed:
                return conn, True
        loop = asyncio.get_running_loop()
        async with asyncio.timeout_at(deadline):
            if self.unix_socket is not None:
                _, conn = await loop.create_unix_connection(_Connection, self.unix_socket)
            else:
                _, conn = await loop.create_connection(_Connection, host, port)
        return conn, False

    async def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.transport.close()
        self._idle.clear()
