"""A lean HTTP/1.1 path for POSTed events, aiohttp for every other request: the broker's ingress, the
function runner's deliveries, the function host's events and the gateway's V2 inference.

aiohttp's per-request machinery cost the broker more CPU than storing and delivering an event.
Each connection starts on ``IngressProtocol``, which answers the common request itself: a POST
to an ingress path with a ``Content-Length`` body no larger than the limit, one at a time per
connection (pipelined requests wait in order). A head llhttp cannot read, or too large, is answered here from the
error table (400, 431) and the connection closed. At the first request it does not take (another path or method, a
chunked body, ``Expect``) it hands the connection, with the bytes already read, to aiohttp's ``RequestHandler``,
which then serves the rest of that connection: the admin API, sources, and the strict answers to odd requests.
``accept`` answers
a status, a body and optionally headers (a JSON body by default). A server given ``probe`` also answers bodiless
GETs and HEADs of the paths ``probe`` knows (a function host's health probes), so a process can answer those and its
events without importing aiohttp: ``fallback`` is called only when a connection is handed over.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, NamedTuple, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

from infra.errors import InvalidRequest, KnflowError
from infra.http import error_answer

if TYPE_CHECKING:
    from infra.guard import Guard

log = logging.getLogger(__name__)


class Answer(NamedTuple):
    """What ``accept`` answers: a status, a body, and headers (``None``: a JSON body, or none)."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] | None = None


Accept = Callable[[str, dict[str, str], bytes], Awaitable[Answer]]
#: ``probe(method, path)``: the answer to a bodiless GET or HEAD of ``path``, None to leave it to aiohttp
Probe = Callable[[str, str], "Answer | None"]
#: The client's address while an ``asgi`` server's ``accept`` runs (an ASGI scope's ``client``).
PEER: contextvars.ContextVar[object] = contextvars.ContextVar("ingress_peer", default=None)

MAX_HEAD = 16 * 1024
MAX_LINE = 8190  # aiohttp's limit on the request line and on each header line
IDLE_TIMEOUT_S = 75.0  # aiohttp's keep-alive default: an idle connection is closed after this
HEAD_TIMEOUT_S = 10.0  # a request head must be complete this long after its first byte (a slow client is cut)
SWEEP_S = 2.0
_METHODS = {b"POST": "POST", b"GET": "GET", b"HEAD": "HEAD"}
_VERSIONS = (b" HTTP/1.1", b" HTTP/1.0")
# fields a request may carry once only (the broker reads one event from them)
_SINGLE = frozenset({"content-length", "content-type", "host", "transfer-encoding"})
_DIGITS = re.compile(r"[0-9]{1,15}")
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_BODILESS = frozenset({204, 304})
_ANONYMOUS_DEFAULT = frozenset({"authorization", "cookie", "x-knflow-namespace"})  # their absence, for inference
# set by this path itself, or meaningless on a re-framed answer
_OWN_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive", "date", "server"})


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

    transport: asyncio.Transport  # set by connection_made, before the server tracks the connection

    def __init__(self, server: IngressServer):
        self.server = server
        self.idle_since = time.monotonic()
        self.head_since: float | None = None  # when the first byte of a head not yet complete arrived
        self.busy = False
        self.task: asyncio.Future | None = None
        self._buf = bytearray()
        self._head: _Head | None = None  # the parsed head of a request whose body is still arriving
        self._paused = False
        self._write_paused = False
        self._done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream connection's transport
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._done = True
        self.server.connections.discard(self)

    def pause_writing(self) -> None:
        self._write_paused = True  # the client does not read its answers: take no more requests until it does

    def resume_writing(self) -> None:
        self._write_paused = False
        if not self.busy:
            self._next()

    def data_received(self, data: bytes) -> None:
        self.idle_since = time.monotonic()
        if not self._buf and self._head is None:
            self.head_since = self.idle_since
        self._buf += data
        if not self.busy:
            self._next()
        elif len(self._buf) > self.server.max_body + MAX_HEAD and not self._paused:
            self._paused = True  # a pipelining client is far ahead: let TCP push back
            self.transport.pause_reading()

    def _next(self) -> None:
        """Take the next whole request from the buffer, if there is one."""
        if self._done:
            return
        if self._write_paused:
            if not self._paused:
                self._paused = True
                self.transport.pause_reading()
            return
        if self._paused:
            self._paused = False
            self.transport.resume_reading()
        buf = self._buf
        head = self._head
        if head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    too_large = f"the request head is larger than the limit of {MAX_HEAD} bytes"
                    self._refuse(KnflowError(too_large, status=431))
                elif b"\n\n" in buf or b"\r\n\n" in buf:
                    self._refuse(InvalidRequest("malformed HTTP request: a line of the head ends without CR"))
                elif self.head_since is None:
                    self.head_since = time.monotonic()
                return
            try:
                head = _parse_head(bytes(buf[:end]), self.server.is_ingress, self.server.probe is not None)
            except KnflowError as malformed:
                self._refuse(malformed)
                return
            if head is None or head.length > self.server.max_body or not self.server.takes(head):
                self._hand_over()  # aiohttp and the guard give the precise answer (404, 405, 413, 400, 401, 421 ...)
                return
            del buf[: end + 4]
            self.head_since = None
        if len(buf) < head.length:
            self._head = head  # parsed once, however slowly the body arrives
            return
        self._head = None
        if head.method != "POST":
            self._probed(head)
            return
        body = bytes(buf[: head.length])
        del buf[: head.length]
        self.busy = True
        target = f"{head.path}?{head.query}" if head.query and self.server.asgi else head.path
        self.task = self.server.loop.create_task(self._serve(target, head, body))

    def _probed(self, head: _Head) -> None:
        """Answer a GET or HEAD here when ``probe`` knows its path, else hand the connection over."""
        assert self.server.probe is not None  # _parse_head takes no other method without it
        answer = self.server.probe(head.method, head.path)
        if answer is None:
            self._buf[:0] = head.raw  # aiohttp reads the request from its start
            self._hand_over()
        elif self._answer(answer, head) and self._buf:
            self._next()

    async def _serve(self, target: str, head: _Head, body: bytes) -> None:
        """Answer one request: ``accept``'s answer is written in the same task that reaches it (no callback)."""
        if self.server.asgi:
            PEER.set(self.transport.get_extra_info("peername"))  # in this task's own context
        try:
            answer = await self.server.accept(target, head.headers, body)
        except asyncio.CancelledError as stopping:  # not answered 2xx, so the client sends it again
            self._answer(Answer(*error_answer(stopping)), head)
            raise
        except Exception as error:  # accept answers knflow's errors itself: this is a bug
            log.error("ingress: accepting a request failed", exc_info=error)
            answer = Answer(*error_answer(error))
        if self._answer(answer, head) and self._buf:
            self._next()

    def _answer(self, answer: Answer, request: _Head) -> bool:
        """Write ``answer``; whether the connection goes on."""
        self.busy, self.task = False, None
        self.idle_since = time.monotonic()
        if self._done:
            return False
        status, body = answer.status, answer.body
        head = b"HTTP/1.1 %d %s\r\nDate: %s\r\n" % (status, _REASONS.get(status, b"Unknown"), self.server.date())
        if status not in _BODILESS:
            head += b"Content-Length: %d\r\n" % len(body)
        else:
            body = b""
        if request.method == "HEAD":
            body = b""  # its length said, as for a GET
        if answer.headers is not None:
            head += _header_lines(answer.headers)
        elif body:
            head += b"Content-Type: application/json\r\n"
        if not request.keep_alive:
            head += b"Connection: close\r\n"
        elif request.http10:
            head += b"Connection: keep-alive\r\n"
        self.transport.write(head + b"\r\n" + body)
        if not request.keep_alive:
            self._done = True
            self.transport.close()
            return False
        return True

    def timed_out(self) -> None:
        """The head did not arrive in time: answer 408 and close."""
        self._refuse(KnflowError(f"the request head did not arrive within {HEAD_TIMEOUT_S:g} seconds", status=408))

    def _refuse(self, error: KnflowError) -> None:
        """Answer a head that cannot be read (or came too late) from the error table, and close: what follows it on
        the connection cannot be framed."""
        self._answer(Answer(*error_answer(error)), _CLOSE)

    def _hand_over(self) -> None:
        """Give the connection and the bytes read so far to aiohttp for the rest of its life."""
        transport = self.transport
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


def _header_lines(headers: Mapping[str, str]) -> bytes:
    """``headers`` as head lines, without those this path sets itself (UTF-8; bytes read as surrogates go back as they
    came, see ``infra.http1``)."""
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items() if name.lower() not in _OWN_HEADERS)
    try:
        return lines.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return lines.encode("utf-8", "replace")


class _Head(NamedTuple):
    method: str  # POST, or GET / HEAD on a server with a probe
    raw: bytes  # the head as it came, with its blank line
    path: str  # without the query
    query: str
    headers: dict[str, str]  # lower-cased names
    length: int
    keep_alive: bool
    http10: bool


_CLOSE = _Head("POST", b"", "", "", {}, 0, keep_alive=False, http10=False)  # a head that never came: answer, close


class _Fields:
    """llhttp's callbacks for one request head: its target, and its fields with lower-cased names, a repeated field's
    values joined by ", " as aiohttp joins them; ``twice`` when a field the lean path reads once came again."""

    __slots__ = ("headers", "target", "twice")
    names: dict[bytes, str] = {}  # the lower-cased text of each field name seen (a few dozen in practice)

    def __init__(self) -> None:
        self.target = b""
        self.headers: dict[str, str] = {}
        self.twice = False

    def on_url(self, url: bytes) -> None:
        self.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        text = self.names.get(name)
        if text is None:
            text = name.decode("latin-1").lower()  # a token: ASCII, llhttp checked it
            if len(self.names) < 1024:
                self.names[name] = text
        headers = self.headers
        if text in headers:
            self.twice = self.twice or text in _SINGLE or text.startswith("ce-")
            headers[text] += ", " + value.decode("utf-8", "surrogateescape")  # as aiohttp decodes values
        else:
            headers[text] = value.decode("utf-8", "surrogateescape")


def _parse_head(head: bytes, is_ingress: Callable[[str], bool], probes: bool = False) -> _Head | None:
    """The head of an ingress POST this path takes (or, with ``probes``, of a bodiless GET or HEAD), else None
    (aiohttp then answers the request). llhttp (``httptools``) reads the head: one it cannot read, or with a line
    longer than aiohttp takes, is refused here (``InvalidRequest``, 431); of the rest this path takes only the plain
    requests."""
    fields = _Fields()
    try:
        HttpRequestParser(fields).feed_data(head + b"\r\n\r\n")
    except HttpParserUpgrade:
        return None  # aiohttp refuses it
    except HttpParserError as exc:
        raise InvalidRequest(f"malformed HTTP request: {exc}") from None
    if len(head) > MAX_LINE and max(map(len, head.split(b"\r\n"))) > MAX_LINE:
        raise KnflowError(f"a line of the request head is longer than {MAX_LINE} bytes", status=431)
    line_end = head.find(b"\r\n")
    line = head[:line_end] if line_end >= 0 else head
    method = _METHODS.get(line[: line.find(b" ")])
    if method is None or (method != "POST" and not probes) or line[-9:] not in _VERSIONS:
        return None
    target = fields.target
    if len(line) != len(method) + len(target) + 10 or b"%" in target or fields.twice:
        return None  # a request line not in its plain form; percent-encoded paths are left to aiohttp's router
    if not target.isascii():
        return None
    path, _, query = target.decode("ascii").partition("?")
    if method == "POST" and not is_ingress(path):
        return None
    headers = fields.headers
    length = headers.get("content-length")
    if length is None and method != "POST":
        length = "0"
    if length is None or not _DIGITS.fullmatch(length) or "transfer-encoding" in headers or "expect" in headers:
        return None
    if method != "POST" and int(length):
        return None  # a probe has no body
    http10 = line.endswith(b"1.0")
    if not http10 and "host" not in headers:
        return None
    connection = headers.get("connection", "").lower()
    keep_alive = "keep-alive" in connection if http10 else "close" not in connection
    return _Head(method, head + b"\r\n\r\n", path, query, headers, int(length), keep_alive, http10)


class IngressServer:
    """Listens on ``host:port``; ``accept(path, headers, body)`` answers a POST that ``is_ingress(path)`` with an
    ``Answer``."""

    loop: asyncio.AbstractEventLoop  # the loop it listens on, set by start or start_unix

    def __init__(
        self,
        accept: Accept,
        is_ingress: Callable[[str], bool],
        fallback: Callable[[], asyncio.Protocol],
        max_body: int,
        guard: Guard | None = None,
        level: str = "ingress",
        asgi: bool = False,
        probe: Probe | None = None,
    ):
        self.accept, self.is_ingress, self.fallback, self.max_body = accept, is_ingress, fallback, max_body
        self.asgi = asgi  # accept serves an ASGI app: it gets the query after the path, and PEER is set
        self.guard = guard
        self.probe = probe
        if guard is not None:  # imported here: a server without a guard (a function host) does without aiohttp
            from infra.guard import change_problem

            self._change_problem = change_problem
        self.level = level  # the access the lean path's requests have ("ingress" or "inference", infra.guard)
        self.connections: set[IngressProtocol] = set()
        self.date = _Date()
        self._servers: list[asyncio.Server] = []
        self._sweeper: asyncio.Task | None = None

    def takes(self, head: _Head) -> bool:
        """Whether this path may answer a request itself: one the guard lets through without a token, to one of
        the server's names (anything else goes to aiohttp, whose middleware answers it). Inference is taken only
        when it addresses ``default`` as an anonymous caller (no query, namespace header, token or cookie): the
        guard's scope decides the rest."""
        guard, headers = self.guard, head.headers
        if guard is None:
            return True
        inference = self.level == "inference"
        if not guard.host_allowed(headers.get("host")):
            return False
        if not (guard.open_all or (guard.open_inference if inference else guard.open_ingress)):
            return False
        if inference and (head.query or not _ANONYMOUS_DEFAULT.isdisjoint(headers)):
            return False
        return self._change_problem(guard, headers.get, has_body=not inference) is None

    async def start(self, host: str, port: int) -> int:
        """Listen on TCP; returns the bound port (``port`` 0 picks a free one). May be called again, as may
        ``start_unix``: one server, several listeners."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: IngressProtocol(self), host, port, reuse_address=True, backlog=1024)
        self._listening(server)
        return server.sockets[0].getsockname()[1]

    async def start_unix(self, path: str) -> None:
        """Listen on the Unix socket ``path``."""
        server = await asyncio.get_running_loop().create_unix_server(lambda: IngressProtocol(self), path)
        self._listening(server)

    def _listening(self, server: asyncio.Server) -> None:
        self.loop = asyncio.get_running_loop()  # kept: ensure_future would look it up for every request
        self._servers.append(server)
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep())

    @property
    def addresses(self) -> list[object]:
        """Every listener's address: ``(host, port, ...)`` for TCP, the path for a Unix socket."""
        return [sock.getsockname() for server in self._servers for sock in server.sockets]

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            now = time.monotonic()
            for conn in [c for c in self.connections if not c.busy]:
                if conn.head_since is not None and conn._buf and now - conn.head_since > HEAD_TIMEOUT_S:
                    conn.timed_out()
                elif conn.idle_since < now - IDLE_TIMEOUT_S:
                    conn.transport.close()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop listening, let requests in flight finish (up to ``grace`` seconds), close this path's connections.

        Connections handed to aiohttp are closed by its runner's cleanup; call ``wait_closed`` after that.
        """
        if self._sweeper is not None:
            self._sweeper.cancel()
        for server in self._servers:
            server.close()
        deadline = time.monotonic() + grace
        while any(c.busy for c in self.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        late = [c.task for c in self.connections if c.task is not None]
        for task in late:
            task.cancel()  # not answered with 202, so the client sends it again
        await asyncio.gather(*late, return_exceptions=True)
        for conn in list(self.connections):
            with contextlib.suppress(Exception):
                conn.transport.close()

    async def wait_closed(self) -> None:
        """Wait until the listener is closed (on Python 3.12+ also every connection it accepted)."""
        for server in self._servers:
            await server.wait_closed()
