"""OpenTelemetry tracing for knflow's processes, exported over OTLP/HTTP only when an endpoint is configured.

``configure_tracing(service, environ)`` is called once by each entry point (broker, runner, function workers,
gateway, knflow server). With ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) set it
installs an SDK tracer provider with a batch span processor and the OTLP/HTTP exporter, honouring the standard
``OTEL_*`` variables (``OTEL_TRACES_SAMPLER``/``_ARG``, ``OTEL_SERVICE_NAME``, ``OTEL_BSP_*``); without it nothing
is installed and every helper here is a cheap branch on one flag. Spans are parented through W3C ``traceparent``
strings (the CloudEvents distributed-tracing extension), so work on an event continues the event's trace.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

log = logging.getLogger(__name__)

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
TRACEPARENT_HEADER = "traceparent"

_tracer: Any = None  # an SDK tracer while tracing is configured in this process, else None
_provider: Any = None
_pid = 0  # the process that configured it: a forked child configures its own


def tracing_wanted(environ: Mapping[str, str]) -> bool:
    """Whether ``environ`` names an OTLP endpoint (and neither turns the SDK off nor asks for no trace exporter)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def traces_endpoint(environ: Mapping[str, str]) -> str:
    """Where spans go: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` as it is, else ``OTEL_EXPORTER_OTLP_ENDPOINT`` +
    ``/v1/traces`` (the OTLP/HTTP rule for the two variables)."""
    if endpoint := environ.get(ENDPOINT_VARIABLES[0], "").strip():
        return endpoint
    return environ[ENDPOINT_VARIABLES[1]].strip().rstrip("/") + "/v1/traces"


def configure_tracing(service: str, environ: Mapping[str, str] | None = None) -> bool:
    """Install the SDK provider and OTLP exporter for this process when an endpoint is configured; whether it did."""
    global _tracer, _provider, _pid
    environ = os.environ if environ is None else environ
    if _tracer is not None and _pid == os.getpid():
        return True
    _tracer = _provider = None  # a forked child does not export through its parent's processor
    if not tracing_wanted(environ):
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME") or f"knflow-{service}"})
    _provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER / _ARG
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_endpoint(environ))))
    _tracer = _provider.get_tracer("knflow")
    _pid = os.getpid()
    log.info("tracing: exporting %s spans over OTLP/HTTP", service)
    return True


def shutdown_tracing() -> None:
    """Flush the spans still queued and stop the exporter (a no-op when tracing is off)."""
    global _tracer, _provider
    provider, _tracer, _provider = _provider, None, None
    if provider is not None and _pid == os.getpid():
        provider.shutdown()


@contextlib.contextmanager
def traced(service: str, environ: Mapping[str, str] | None = None) -> Iterator[bool]:
    """``configure_tracing`` for the block (a process's whole run), then flush: the entry points' one line."""
    configured = configure_tracing(service, environ)
    try:
        yield configured
    finally:
        shutdown_tracing()


def enabled() -> bool:
    """Whether this process exports spans."""
    return _tracer is not None


def _context(traceparent: str | None) -> Any:
    """The OpenTelemetry context of the current span, else of ``traceparent`` (a remote parent), else a root."""
    from opentelemetry import trace

    if trace.get_current_span().get_span_context().is_valid:
        return None  # the active span is the parent
    remote = _remote(traceparent)
    return trace.set_span_in_context(trace.NonRecordingSpan(remote) if remote else trace.INVALID_SPAN)


def _remote(traceparent: str | None) -> Any:
    """The span context a W3C traceparent (version 00) names, ``None`` when it is not one. Parsed by hand: this is
    on every delivery's path, and the propagator's regular expression and carrier costs are measurable there."""
    from opentelemetry.trace import SpanContext, TraceFlags

    if not traceparent or len(traceparent) != 55 or not traceparent.startswith("00-"):
        return None
    try:
        trace_id, span_id, flags = int(traceparent[3:35], 16), int(traceparent[36:52], 16), int(traceparent[53:], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))


def _kind(name: str) -> Any:
    from opentelemetry.trace import SpanKind

    return SpanKind[name.upper()]


def traceparent_of(span: Any) -> str:
    """The W3C traceparent that names ``span`` as the parent of the work it causes."""
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


@contextlib.contextmanager
def span(
    name: str, traceparent: str | None = None, *, kind: str = "internal", attributes: Mapping[str, Any] | None = None
) -> Iterator[Any]:
    """A span around the block, a child of the current span or else of ``traceparent``; ``None`` when tracing is
    off. An exception leaving the block is recorded on it."""
    if _tracer is None:
        yield None
        return
    with _tracer.start_as_current_span(name, _context(traceparent), _kind(kind), attributes) as current:
        yield current


def start_span(
    name: str, traceparent: str | None, *, kind: str = "internal", attributes: Mapping[str, Any] | None = None
) -> Any:
    """A started span (not made current: cheaper where nothing runs inside it), a child of the current span or else
    of ``traceparent``; ``None`` when tracing is off. The caller ends it with ``end_span``."""
    if _tracer is None:
        return None
    return _tracer.start_span(name, _context(traceparent), _kind(kind), attributes)


def end_span(current: Any, error: str | None = None) -> None:
    """End a span from ``start_span`` (``None``: tracing off), with status error and ``error`` when given."""
    if current is None:
        return
    if error is not None:
        mark_error(current, error)
    current.end()


@contextlib.contextmanager
def activated(current: Any) -> Iterator[None]:
    """Make a started span the current one for the block (so events sent there are its children)."""
    if current is None:
        yield
        return
    from opentelemetry import trace

    with trace.use_span(current, end_on_exit=False):
        yield


def producer_traceparent(name: str, traceparent: str | None, attributes: Mapping[str, Any] | None = None) -> str:
    """Record a producer span for an event about to be sent (a child of the current span, else of the cause's
    ``traceparent``, else a root) and return its traceparent for the event; tracing must be on."""
    produced = _tracer.start_span(name, _context(traceparent), _kind("producer"), attributes)
    produced.end()
    return traceparent_of(produced)


def mark_error(current: Any, message: str) -> None:
    """Set ``current``'s status to error with ``message`` (``current`` may be ``None``: tracing off)."""
    if current is None:
        return
    from opentelemetry.trace import Status, StatusCode

    current.set_status(Status(StatusCode.ERROR, message))


__all__ = [
    "activated",
    "configure_tracing",
    "enabled",
    "end_span",
    "mark_error",
    "producer_traceparent",
    "shutdown_tracing",
    "span",
    "start_span",
    "traced",
    "traceparent_of",
    "tracing_wanted",
]
