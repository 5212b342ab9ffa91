"""The span exporter process of a traced knflow process: ``python -m infra.spanexport SERVICE``, fed by
``infra.spanqueue`` on stdin, exports each batch with OpenTelemetry's OTLP/HTTP exporter (the same protobuf requests,
resource, scope, headers, timeout, compression and retries as the SDK's batch processor would send), off the GIL of
the process whose spans they are. It exits, after exporting what it was sent, when its stdin closes.
"""

from __future__ import annotations

import logging
import marshal
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from typing import IO, Any

from infra.spanqueue import HEADER
from infra.tracing import traces_endpoint

log = logging.getLogger(__name__)

SCOPE = "knflow"  # the instrumentation scope knflow's spans were always exported under


def batches(pipe: IO[bytes]) -> Iterator[list[tuple[Any, ...]]]:
    """The batches written to ``pipe`` until it closes."""
    while len(head := pipe.read(HEADER.size)) == HEADER.size:
        (size,) = HEADER.unpack(head)
        payload = pipe.read(size)
        if len(payload) < size:
            return
        yield marshal.loads(payload)


class Builder:
    """Turns span records into the SDK's ``ReadableSpan``s, for its exporter."""

    def __init__(self, service: str) -> None:
        from opentelemetry import trace
        from opentelemetry.sdk import trace as sdk
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self.trace, self.sdk = trace, sdk
        self.resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or f"knflow-{service}"})
        self.scope = InstrumentationScope(SCOPE)
        self.kinds = list(trace.SpanKind)
        self.unset = trace.Status(trace.StatusCode.UNSET)
        self.sampled = trace.TraceFlags(trace.TraceFlags.SAMPLED)

    def spans(self, records: Sequence[tuple[Any, ...]]) -> list[Any]:
        trace, sdk = self.trace, self.sdk
        built = []
        for trace_id, span_id, parent_id, remote, name, kind, start, end, attributes, events, status in records:
            parent = trace.SpanContext(trace_id, parent_id, remote, self.sampled) if parent_id else None
            built.append(
                sdk.ReadableSpan(
                    name=name,
                    context=trace.SpanContext(trace_id, span_id, False, self.sampled),
                    parent=parent,
                    resource=self.resource,
                    attributes=attributes,
                    events=[sdk.Event(n, a, t) for n, t, a in events or ()],
                    kind=self.kinds[kind],
                    status=trace.Status(trace.StatusCode(status[0]), status[1] or None) if status[0] else self.unset,
                    start_time=start,
                    end_time=end,
                    instrumentation_scope=self.scope,
                )
            )
        return built


def main(argv: Sequence[str] | None = None) -> int:
    """Export every batch that arrives on stdin, then flush and exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the process it serves stops it by closing the pipe, after its last
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # spans: a signal to the whole process group must not lose them
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    service = (argv if argv is not None else sys.argv[1:] or ["knflow"])[0]
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter(endpoint=traces_endpoint(os.environ))
    builder = Builder(service)
    try:
        for batch in batches(sys.stdin.buffer):
            exporter.export(builder.spans(batch))
    finally:
        exporter.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
