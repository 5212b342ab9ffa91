"""An OTLP/HTTP trace receiver for tests: decodes each export with ``opentelemetry-proto`` and keeps the spans."""

from __future__ import annotations

import asyncio
import gzip
import threading

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from infra.localservices import free_port


class OtlpReceiver:
    """An OTLP/HTTP trace receiver on a free loopback port (its own thread and loop): keeps every span it gets."""

    def __init__(self) -> None:
        self.port = free_port()
        self.spans: list = []  # opentelemetry.proto Span messages
        self.resources: list = []  # the Resource message of each export's resource spans
        self.scopes: set[str] = set()  # the instrumentation scopes' names
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _export(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest.FromString(body)
        with self._lock:
            for resource in export.resource_spans:
                self.resources.append(resource.resource)
                for scope in resource.scope_spans:
                    self.scopes.add(scope.scope.name)
                    self.spans.extend(scope.spans)
        answer = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=answer, content_type="application/x-protobuf")

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._export)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        self._started.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def of_trace(self, trace_id: str) -> dict[str, object]:
        """The spans received for ``trace_id``, by span id (hex)."""
        with self._lock:
            return {s.span_id.hex(): s for s in self.spans if s.trace_id.hex() == trace_id}
