"""A small HTTP/1.1 keep-alive client: one request, one response read whole, pooled connections.

aiohttp's client costs more CPU per request than the rest of the broker's work for an event;
delivery needs only a fraction of it (plain ``http://``, POST, a small response read whole). It is the
transport of ``infra.asyncclient.AsyncClient`` for ``http://`` and Unix sockets, which callers use instead.
llhttp (``httptools``) reads the responses: Content-Length, chunked bodies, or bodies delimited by connection
close; 1xx interim responses are skipped. A request that fails on a reused idle connection before any
response byte arrived is sent once more on a fresh connection (the server had closed it).
``https://`` URLs are not handled here (``AsyncClient`` takes them to aiohttp).
"""

from __future__ import annotations

import asyncio
from typing import cast
from urllib.parse import urlsplit

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from infra.httpclient import Answer


class _Connection(asyncio.Protocol):
    """One keep-alive connection; llhttp (``httptools``) reads each response, a fresh parser per request."""

    transport: asyncio.Transport  # set by connection_made, before create_connection returns the connection
    timer: asyncio.TimerHandle | None  # each request with a deadline sets it

    def __init__(self) -> None:
        self.closed = False
        self._waiter: asyncio.Future | None = None
        self._head_request = False
        self._reset()

    def _reset(self) -> None:
        self._parser = HttpResponseParser(self)
        self._status: int | None = None  # the final (not 1xx) response's, once its head is read
        self._reason = bytearray()
        self._headers: dict[str, str] = {}
        self._raw: list[tuple[str, str]] = []
        self._until_close = False
        self._body = bytearray()
        self._done = False
        self.got_bytes = False
        self.reusable = False
        self.timer = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream connection's transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            if self._until_close:
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
        if self._waiter is None or self._done:
            self.transport.close()  # bytes nobody asked for: do not reuse
            return
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except (HttpParserError, HttpParserUpgrade) as exc:
            if not self._waiter.done():
                why = "the server switched protocols" if isinstance(exc, HttpParserUpgrade) else exc
                self._waiter.set_exception(ConnectionError(f"malformed HTTP response: {why}"))
            self.reusable = False
            self.transport.close()

    # llhttp's callbacks

    def on_message_begin(self) -> None:
        if self._done:
            raise ConnectionError("bytes after the response")  # the connection is not reused
        self._reason.clear()  # a 1xx interim response's head is forgotten
        self._headers, self._raw = {}, []

    def on_status(self, reason: bytes) -> None:
        self._reason += reason  # in pieces when the head arrives in pieces

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._status is not None:
            return  # a chunked body's trailer fields are not the response's headers
        # as aiohttp and the lean server decode heads: UTF-8, other bytes as surrogates (sent back as they came)
        text, value_text = name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")
        self._headers[text.lower()] = value_text
        self._raw.append((text, value_text))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            return  # an interim response: the final one follows
        self._status = status
        if self._head_request:
            self._finish(keep=self._parser.should_keep_alive())  # no body, whatever the headers say
        elif status not in (204, 304) and "content-length" not in self._headers:
            self._until_close = "transfer-encoding" not in self._headers  # the body ends when the connection does

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        if self._status is not None and not self._done:
            self._finish(keep=self._parser.should_keep_alive())

    def _finish(self, keep: bool) -> None:
        self._done = True
        reason = self._reason.decode("utf-8", "surrogateescape")
        response = Answer(self._status or 0, self._headers, bytes(self._body), reason, tuple(self._raw))
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

    async def post(self, url: str, headers: dict[str, str], body: bytes, timeout: float) -> Answer:
        """POST ``body``; raises ``TimeoutError`` or ``OSError``/``ConnectionError`` on failure."""
        return await self.request("POST", url, headers, body, timeout)

    async def request(
        self, method: str, url: str, headers: dict[str, str], body: bytes, timeout: float | None
    ) -> Answer:
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
