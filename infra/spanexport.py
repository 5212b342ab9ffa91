"""The span exporter process of a traced knflow process: ``python -m infra.spanexport SERVICE``, fed by
``infra.spanqueue`` on stdin, exports each batch with OpenTelemetry's OTLP/HTTP exporter (the same protobuf requests,
resource, scope, headers, timeout, compression and retries as the SDK's batch processor would send), off the GIL of
the process whose spans they are. It exits, after exporting what it was sent, when its stdin closes.

Two ways to build a request: ``Builder`` makes the SDK's ``ReadableSpan``s for the exporter's own encoder (the
reference, ~85 us a span); ``infra.otlpwire.Encoder`` writes the same request straight from the records (~7 us a
span, proven equal to the reference in ``tests/infra/test_tracing.py``) and hands the bytes to the exporter's HTTP
client. The reference serves when that client is not there (another SDK version) or a value has a type the encoder
does not know.
"""

from __future__ import annotations

import logging
import marshal
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from typing import IO, Any

from infra.otlpwire import Encoder
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

    def encoder(self) -> Encoder:
        """The fast encoder of the same resource and scope."""
        return Encoder(self.resource.attributes, self.resource.schema_url or "", SCOPE)

    def spans(self, records: Sequence[tuple[Any, ...]]) -> list[Any]:
        trace, sdk = self.trace, self.sdk
        built = []
        for trace_id, span_id, parent_id, remote, name, kind, start, end, attributes, events, status in records:
            trace_id, span_id = int(trace_id, 16), int(span_id, 16)
            parent = trace.SpanContext(trace_id, int(parent_id, 16), remote, self.sampled) if parent_id else None
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
    encoder = builder.encoder()
    send = getattr(getattr(exporter, "_client", None), "export", None)  # the HTTP client of recent exporters
    try:
        for batch in batches(sys.stdin.buffer):
            export(batch, exporter, builder, encoder if send else None, send)
    finally:
        exporter.shutdown()
    return 0


def export(batch: list[tuple[Any, ...]], exporter: Any, builder: Builder, encoder: Encoder | None, send: Any) -> None:
    """One batch, encoded here and sent by the exporter's client when it can be, else through the exporter."""
    if encoder is not None:
        try:
            data = encoder.request(batch)
        except TypeError:
            pass  # a value type only the SDK's encoder handles
        else:
            send(data)
            return
    exporter.export(builder.spans(batch))


if __name__ == "__main__":
    sys.exit(main())
