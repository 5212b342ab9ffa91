"""The function host: one aiohttp server that feeds CloudEvents to one function, as a Knative pod does.

Request in: a CloudEvent over HTTP (binary or structured) on any path except ``/health/liveness``,
``/health/readiness`` and ``GET /metrics`` (Prometheus: invocations, durations, cold starts). Answer: the reply
event in binary mode (200), 204 when the function returns none, 400 for a request that is not a CloudEvent, 413 above
``settings.functions.max_request_bytes``, 429 beyond ``settings.functions.concurrency`` events in
flight, 503 while draining, and when the handler raises: a ``KnflowError``'s own status (a 4xx
tells delivery not to retry), else 500; the body is then a ``dev.knflow.function.error`` event.
SIGTERM stops accepting, finishes the events in flight, runs the function's ``stop`` and exits.

A fresh host answers its probes and its events on the lean HTTP/1.1 path (``eventing.ingress``): aiohttp's server is
imported and built only when a request needs it (an ASGI function's other methods, a chunked body, an odd request),
so the first event is not kept waiting for it (``DEFERRED`` lists what the worker template imports in its place).

Run: ``python -m functions.runtime.host NAME|dotted.module|path/to/file.py|function-directory`` (or
``KNFLOW_FUNCTION``), listening on ``LISTEN_ADDRESS`` (``host:port[,host:port]`` or ``unix:PATH``, as Knative's
runtime reads it; an IPv6 host in brackets), else ``{settings.host}:$PORT``, else ``{settings.host}:8080``. With
``--worker`` it is one of the local runner's workers under a function's own interpreter (see
``functions.runtime.interpreter``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from cloudevents.core.v1.event import CloudEvent

from eventing.bindings import to_http_binary
from eventing.events import RUNID, TRACEPARENT, new_event
from eventing.ingress import PEER, Answer, IngressServer
from eventing.wire import from_http as decode
from eventing.wire import to_http_binary as encode
from functions.runtime.asgi import AsgiFunction, as_reply, make_scope
from functions.runtime.context import SCOPE_KEY, SETTINGS_ENV, Context, Runtime
from functions.runtime.loader import load_function
from functions.runtime.metrics import FunctionMetrics
from infra import tracing
from infra.errors import ConfigError, KnflowError, Unavailable
from infra.http import answer_errors, error_answer, read_body
from infra.logs import bound_runid
from infra.metrics import registry_of, render
from infra.serve import DRAIN_TIMEOUT_S, run_server, serve_until_signalled
from infra.settings import Settings, authority, load_settings, split_authority

if TYPE_CHECKING:
    from aiohttp import web
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

FUNCTION_ERROR = "dev.knflow.function.error"
_HEALTH = ("/health/liveness", "/health/readiness")
METRICS = "/metrics"
_TEXT = {"Content-Type": "text/plain; charset=utf-8"}
#: what a fresh host imports only when a request needs it; the worker template imports it once for all its workers
DEFERRED = ("aiohttp", "aiohttp.web", "functions.runtime.funcdir", "prometheus_client.exposition")


def _error(exc: KnflowError, headers: Mapping[str, str] | None = None) -> Answer:
    return Answer(*error_answer(exc, headers))  # the one table (infra.http), on the lean path and on aiohttp


def _response(answer: Answer) -> web.Response:
    from aiohttp import web

    return web.Response(status=answer.status, body=answer.body, headers=answer.headers)


class FunctionHost:
    """Serves one loaded function (``NativeFunction`` or ``AsgiFunction``) over HTTP."""

    def __init__(self, function: Any, settings: Settings, *, sink: str | None = None, environ=None):
        self.function = function
        self.settings = settings
        self.environ = dict(environ if environ is not None else os.environ)
        self.runtime = Runtime(function.name, settings, sink, step_settings(self.environ))
        self.limit = settings.functions.concurrency
        self.max_bytes = settings.functions.max_request_bytes
        self.inflight = 0
        self.draining = False
        self.source = f"/knflow/functions/{function.name}"
        self._web: web.Server | None = None  # aiohttp's server, made at the first connection handed to it
        self._lean: IngressServer | None = None
        self._drain_timeout = 30.0
        self._stopped = asyncio.Event()
        self.metrics = FunctionMetrics()
        self._registry: CollectorRegistry | None = None

    @property
    def metrics_registry(self) -> CollectorRegistry:
        """The host's Prometheus registry, made at the first scrape."""
        if self._registry is None:
            name = self.function.name
            self._registry = registry_of(lambda: self.metrics.families({name: 1}) + tracing.metric_families())
        return self._registry

    # -- lifecycle ------------------------------------------------------------------

    async def start(self, listen: list[str], drain_timeout: float = 30.0) -> list[str]:
        """Run the function's ``start`` hook, then listen; returns the bound addresses. A POSTed event with a
        Content-Length, health probes and ``GET /metrics`` are answered on the lean HTTP/1.1 path
        (``eventing.ingress``); an ASGI function's other methods and odd requests on aiohttp."""
        self.runtime.loop = asyncio.get_running_loop()
        await self.function.start(self.runtime, self.environ)
        self.metrics.cold_start(self.function.name)  # this process is one
        self._drain_timeout = drain_timeout
        asgi = isinstance(self.function, AsgiFunction)
        self._lean = IngressServer(
            self._accept, self._takes, self._fallback, self.max_bytes, asgi=asgi, probe=self._probe
        )
        for address in listen:
            if address.startswith("unix:"):
                await self._lean.start_unix(address.removeprefix("unix:"))
            else:
                host, port = split_authority(address)
                await self._lean.start(host or "0.0.0.0", port)
        bound = [_describe(a) for a in self._lean.addresses]
        log.info("function %s listening on %s", self.function.name, ", ".join(bound))
        return bound

    async def stop(self) -> None:
        """Stop accepting, let in-flight events finish (bounded), then run the function's ``stop``."""
        if self._stopped.is_set():
            return
        self.draining = True
        if self._lean is not None:
            await self._lean.stop(self._drain_timeout)
        if self._web is not None:  # as aiohttp's runner cleans up: idle connections closed, busy ones given time
            await asyncio.sleep(0)
            self._web.pre_shutdown()
            await self._web.shutdown(self._drain_timeout)
        try:
            await self.function.stop()
        finally:
            await self.runtime.close()
            self._stopped.set()
        log.info("function %s stopped", self.function.name)

    # -- requests -------------------------------------------------------------------

    def _fallback(self) -> asyncio.Protocol:
        """aiohttp's handler for a connection the lean path hands over; its server is made the first time."""
        if self._web is None:
            from aiohttp import web

            self._web = web.Server(answer_errors(self._dispatch), access_log=None)
        return self._web()

    def _probe(self, method: str, path: str) -> Answer | None:
        """The answer to a health probe or a ``GET /metrics`` (open like the host's event path: Knative's pod port);
        None for any other bodiless GET or HEAD."""
        if path in _HEALTH:
            return self._health(path)
        if path == METRICS and method == "GET":
            from prometheus_client.exposition import CONTENT_TYPE_LATEST  # imported by the first scrape

            return Answer(200, render(self.metrics_registry), {"Content-Type": CONTENT_TYPE_LATEST})
        return None

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.method in ("GET", "HEAD") and (probed := self._probe(request.method, request.path)) is not None:
            return _response(probed)
        body = await read_body(request, self.max_bytes, "request body")
        if isinstance(self.function, AsgiFunction):
            raw = [(name.lower(), value) for name, value in request.raw_headers]
            http = _Http(request.method, request.path, request.query_string, raw, _peer(request))
            headers = request.headers
            return _response(await self._admitted(headers, request.path, lambda: self._asgi(http, headers, body)))
        return _response(await self._accept(request.path, request.headers, body))

    def _takes(self, path: str) -> bool:
        """The lean path takes POSTs to any path but the health ones."""
        return path not in _HEALTH

    async def _accept(self, target: str, headers: Mapping[str, str], body: bytes) -> Answer:
        """One event (a POST) to the function, on either path; for an ASGI function ``target`` keeps its query."""
        if not isinstance(self.function, AsgiFunction):
            return await self._admitted(headers, target, lambda: self._event(headers, body))
        path, _, query = target.partition("?")
        # the lean path's names are lower case already (eventing.ingress)
        raw = [(name.encode("latin-1"), value.encode("utf-8", "surrogateescape")) for name, value in headers.items()]
        http = _Http("POST", path, query, raw, _address(PEER.get()))
        return await self._admitted(headers, path, lambda: self._asgi(http, headers, body))

    async def _admitted(self, headers: Mapping[str, str], path: str, handle: Callable[[], Awaitable[Any]]) -> Any:
        """``handle()``'s answer, or an ``Answer`` refusing it while draining (503) or at the concurrency limit
        (429); counted, and traced when tracing is on."""
        if self.draining:
            return _error(Unavailable("function is shutting down"), {"Connection": "close"})
        if self.inflight >= self.limit:
            return _error(Unavailable(f"more than {self.limit} events in flight", status=429))
        self.inflight += 1
        began = time.monotonic()
        status = 500
        try:
            response = await (self._traced(headers, path, handle) if tracing.enabled() else handle())
            status = response.status
            return response
        finally:
            self.inflight -= 1
            self.metrics.invoked(self.function.name, status, time.monotonic() - began)

    async def _traced(self, headers: Mapping[str, str], path: str, handle: Callable[[], Awaitable[Any]]) -> Any:
        """``handle()`` in an invocation span, a child of the delivery's ``traceparent`` header (else the
        event's), so the events the function sends meanwhile are its children."""
        parent = headers.get(tracing.TRACEPARENT_HEADER) or headers.get(f"ce-{TRACEPARENT}")
        attributes = {
            "faas.name": self.function.name,
            "cloudevents.event_type": headers.get("ce-type", ""),
            "cloudevents.event_id": headers.get("ce-id", ""),
            "knflow.runid": headers.get(f"ce-{RUNID}", ""),
        }
        name = f"{self.function.name} {headers.get('ce-type', path)}"
        with tracing.span(name, parent, kind="server", attributes=attributes) as span:
            response = await handle()
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 400:
                tracing.mark_error(span, f"status {response.status}")
            return response

    def _health(self, path: str) -> Answer:
        if path == "/health/readiness":
            ok, message = (False, "draining") if self.draining else self.function.ready()
        else:
            ok, message = self.function.alive()
        return Answer(200 if ok else 500, message.encode(), _TEXT)

    async def _event(self, headers: Mapping[str, str], body: bytes) -> Answer:
        """One event to a function of knflow's own shape: its reply (200), none (204), or the failure."""
        try:
            event = decode(headers, body)
        except KnflowError as exc:
            return _error(exc)
        try:
            with bound_runid(event.get_extension(RUNID)):  # every log record of this event carries it
                result = await self.function.call(event, Context(self.runtime, event))
            if result is None:
                return Answer(204)
            if not isinstance(result, CloudEvent):
                raise TypeError(f"handle must return a CloudEvent or None, not {type(result).__name__}")
            out_headers, out = encode(as_reply(result, event))
        except Exception as exc:
            return self._failure(event, exc)
        return Answer(200, out, out_headers)

    async def _asgi(self, http: _Http, headers: Mapping[str, str], body: bytes) -> Answer:
        """One request to a function of Knative's shape (ASGI), with the event when it takes one."""
        try:
            event = decode(headers, body) if self.function.parses_event else None
        except KnflowError as exc:
            return _error(exc)
        try:
            scope = make_scope(http.method, http.path, http.query.encode(), http.raw_headers, http.peer, None)
            scope[SCOPE_KEY] = Context(self.runtime, event)  # what knflow's own shape gets as ctx
            with bound_runid(event.get_extension(RUNID) if event is not None else None):
                reply = await self.function.call_asgi(scope, body, event)
        except Exception as exc:
            return self._failure(event, exc)
        return Answer(reply.status, reply.body, reply.headers)

    def _failure(self, event: CloudEvent | None, exc: Exception) -> Answer:
        if isinstance(exc, KnflowError):
            status, retryable = exc.status, exc.retryable
            log.warning("function %s refused event: %s", self.function.name, exc)
        else:
            status, retryable = 500, True
            log.exception("function %s failed", self.function.name)
        data = {
            "error": str(exc) or type(exc).__name__,
            "kind": type(exc).__name__,
            "status": status,
            "retryable": retryable,
            "function": self.function.name,
            "event": event.get_id() if event is not None else None,
        }
        error = new_event(FUNCTION_ERROR, self.source, data, cause=event)
        headers, body = to_http_binary(error)
        return Answer(status, body, headers)


def step_settings(environ: Mapping[str, str]) -> dict:
    """A pipeline step's settings from ``KNFLOW_STEP_SETTINGS`` (JSON), ``{}`` when unset."""
    raw = environ.get(SETTINGS_ENV)
    if not raw:
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{SETTINGS_ENV} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{SETTINGS_ENV} must be a JSON object")
    return value


class _Http(NamedTuple):
    """What an ASGI scope says of one request, from either path."""

    method: str
    path: str
    query: str
    raw_headers: list[tuple[bytes, bytes]]  # names lower case, as the ASGI scope has them
    peer: tuple[str, int] | None


def _peer(request: web.BaseRequest) -> tuple[str, int] | None:
    return _address(request.transport.get_extra_info("peername") if request.transport else None)


def _address(peer: object) -> tuple[str, int] | None:
    return (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) and len(peer) >= 2 else None


def _describe(address: Any) -> str:
    if isinstance(address, tuple):
        return authority(address[0], address[1])
    return f"unix:{address}"


def listen_addresses(environ: Mapping[str, str], settings: Settings) -> list[str]:
    """``LISTEN_ADDRESS`` (comma-separated ``host:port``, ``[IPv6]:port`` or ``unix:PATH``), else ``{host}:$PORT``,
    else ``{host}:8080``."""
    if not environ.get("LISTEN_ADDRESS"):
        port = environ.get("PORT", "8080")
        if not port.isdigit():
            raise ConfigError(f"PORT={port!r}: expected a port number")
        return [authority(settings.host, int(port))]
    listen = [a.strip() for a in environ["LISTEN_ADDRESS"].split(",") if a.strip()]
    for address in listen:
        if not address.startswith("unix:"):
            try:
                split_authority(address)
            except ValueError as exc:
                raise ConfigError(f"LISTEN_ADDRESS: {exc}") from None
    return listen


async def serve(
    host: FunctionHost,
    listen: list[str],
    *,
    on_ready: Callable[[list[str]], None] | None = None,
    drain_timeout: float = DRAIN_TIMEOUT_S,
) -> bool:
    """Start ``host``, call ``on_ready``, and run until SIGTERM or SIGINT; then let the events in flight finish
    (up to ``drain_timeout`` seconds) and run the function's ``stop``. Whether it stopped in time."""

    async def start() -> None:
        bound = await host.start(listen, drain_timeout)
        if on_ready is not None:
            on_ready(bound)

    async def stop() -> None:
        log.info("draining %d event(s) in flight", host.inflight)
        await host.stop()

    # the host bounds its own drain; the function's ``stop`` hook runs to its end, as it did
    return await serve_until_signalled(start, stop, name=f"function {host.function.name}", drain_timeout=None)


def main(argv: list[str] | None = None) -> int:
    """``python -m functions.runtime.host TARGET``: serve one function until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m functions.runtime.host", description=__doc__.splitlines()[0])
    parser.add_argument("target", nargs="?", help="function name, dotted module or .py file (or KNFLOW_FUNCTION)")
    parser.add_argument("--invoke", choices=("cloudevent", "http"), default=None, help="Knative-shape flavour")
    parser.add_argument("--worker", action="store_true", help="serve as a local runner's worker (spec on stdin)")
    args = parser.parse_args(argv)
    if args.worker:
        from functions.runtime.interpreter import serve_worker

        return serve_worker()
    environ = dict(os.environ)
    settings = load_settings(environ)
    target = args.target or environ.get("KNFLOW_FUNCTION")
    if not target:
        parser.error("name a function (or set KNFLOW_FUNCTION)")
    function = load_function(target, args.invoke)
    host = FunctionHost(function, settings, sink=environ.get("K_SINK"), environ=environ)
    listen = listen_addresses(environ, settings)
    return run_server(lambda: serve(host, listen), settings, service=f"function-{function.name}", environ=environ)


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["FUNCTION_ERROR", "FunctionHost", "listen_addresses", "serve"]
