"""OpenTelemetry tracing for knflow's processes, exported over OTLP/HTTP only when an endpoint is configured.

``configure_tracing(service, environ)`` is called once by each entry point (broker, runner, function workers,
gateway, knflow server). With ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) set, spans
are recorded as plain records on the hot path (ids, name, times, attributes: no SDK span objects, no context
attach/detach) and handed in batches to an exporter process (``infra.spanexport``) that builds the OTLP/HTTP
protobuf requests with the SDK's exporter, so encoding never holds this process's GIL. The standard ``OTEL_*``
variables keep their meaning (``OTEL_TRACES_SAMPLER``/``_ARG``, ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_BSP_*``, the exporter's headers, timeout, compression); without an endpoint nothing is set up, no
OpenTelemetry module is imported, and every helper here is a cheap branch on one flag. Spans are parented through
W3C ``traceparent`` strings (the CloudEvents distributed-tracing extension), so work on an event continues the
event's trace.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import random
import re
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from infra.spanqueue import SpanQueue, queue_families

log = logging.getLogger(__name__)

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
TRACEPARENT_HEADER = "traceparent"
KINDS = {"internal": 0, "server": 1, "client": 2, "producer": 3, "consumer": 4}  # opentelemetry.trace.SpanKind
UNSET, ERROR = 0, 2  # opentelemetry.trace.StatusCode
_ID64 = (1 << 64) - 1

Parent = tuple[str, str, bool, bool]  # trace id, span id (lowercase hex, as in a traceparent), sampled, remote
Sampler = Callable[[str, "Parent | None"], bool]  # from the trace id in hex

_queue: SpanQueue | None = None  # the batches' way to the exporter process while tracing is on here, else None
_sampler: Sampler | None = None
_pid = 0  # the process that configured it: a forked child configures its own
_current: contextvars.ContextVar[Span | None] = contextvars.ContextVar("knflow_span", default=None)
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]([0-9a-f])")  # W3C, version 00
_SAMPLED = frozenset("13579bdf")  # a flags byte's last hex digit with the sampled bit set
_NO_TRACE, _NO_SPAN = "0" * 32, "0" * 16
_getrandbits = random.getrandbits


class Span:
    """One span being recorded: ids, name, kind, start time, attributes, events and status; ``end()`` hands its
    record to the exporter when it was sampled. The methods the SDK's spans have that knflow uses. Ids stay the hex
    strings of the traceparents they come from and go to (the exporter process turns them into bytes): a hex
    conversion costs more than the rest of a span here."""

    __slots__ = (
        "attributes", "events", "kind", "name", "parent_id", "remote", "sampled", "span_id", "start", "status",
        "trace_id",
    )  # fmt: skip

    def __init__(self, name: str, kind: int, parent: Parent | None, attributes: dict[str, Any] | None) -> None:
        """A span named ``name``, a child of ``parent`` (a root when ``None``); it keeps ``attributes`` as its own
        dict (and adds to it)."""
        if parent is None:
            self.trace_id = trace_id = "%032x" % (_getrandbits(128) or 1)
            self.parent_id, self.remote = "", False
        else:
            self.trace_id = trace_id = parent[0]
            self.parent_id, self.remote = parent[1], parent[3]
        self.sampled = _sampler(trace_id, parent)  # type: ignore[misc]  # spans are made once configure() set it
        self.span_id = "%016x" % (_getrandbits(64) or 1)
        self.name, self.kind = name, kind
        self.attributes = attributes if attributes is not None else {}
        self.events: list[tuple[str, int, dict[str, Any]]] | None = None
        self.status: tuple[int, str] = (UNSET, "")
        self.start = time.time_ns()

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        if self.events is None:
            self.events = []
        self.events.append((name, time.time_ns(), dict(attributes or {})))

    def set_error(self, message: str) -> None:
        self.status = (ERROR, message)

    def record_exception(self, exc: BaseException) -> None:
        """An ``exception`` event with the attributes the SDK gives it, and status error (as the SDK's spans do when
        an exception leaves them)."""
        kind = type(exc)
        module = kind.__module__
        name = f"{module}.{kind.__qualname__}" if module and module != "builtins" else kind.__qualname__
        stack = "".join(traceback.format_exception(exc))
        attributes = {"exception.type": name, "exception.message": str(exc), "exception.stacktrace": stack}
        self.add_event("exception", attributes | {"exception.escaped": "False"})
        self.set_error(f"{kind.__name__}: {exc}")

    def end(self) -> None:
        queue = _queue
        if self.sampled and queue is not None:
            queue.put((self.trace_id, self.span_id, self.parent_id, self.remote, self.name, self.kind, self.start,
                       time.time_ns(), self.attributes, self.events, self.status))  # fmt: skip

    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"


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


def sampler_of(environ: Mapping[str, str]) -> Sampler:
    """The sampling decision ``OTEL_TRACES_SAMPLER`` / ``_ARG`` name, as the SDK decides it (default
    ``parentbased_always_on``; a parent-based sampler follows the parent's sampled flag and uses the rest for roots)."""
    name = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
    try:
        rate = float(environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0"))
    except ValueError:
        rate = 1.0
    rate = rate if 0.0 <= rate <= 1.0 else 1.0
    bound = round(rate * (_ID64 + 1))
    roots: dict[str, Callable[[str], bool]] = {
        "always_on": lambda trace_id: True,
        "always_off": lambda trace_id: False,
        "traceidratio": lambda trace_id: int(trace_id[16:], 16) < bound,  # the id's low 64 bits, as the SDK
    }
    root = roots.get(name.removeprefix("parentbased_"))
    if root is None:
        log.warning("tracing: unknown OTEL_TRACES_SAMPLER %r, using parentbased_always_on", name)
        name, root = "parentbased_always_on", roots["always_on"]
    if not name.startswith("parentbased_"):
        return lambda trace_id, parent: root(trace_id)
    return lambda trace_id, parent: parent[2] if parent is not None else root(trace_id)


def configure_tracing(service: str, environ: Mapping[str, str] | None = None) -> bool:
    """Set up span recording and the exporter process for this process when an endpoint is configured; whether it
    did."""
    global _queue, _sampler, _pid
    environ = os.environ if environ is None else environ
    if _queue is not None and _pid == os.getpid():
        return True
    _queue = None  # a forked child does not export through its parent's queue
    if not tracing_wanted(environ):
        return False
    _sampler = sampler_of(environ)
    _queue = SpanQueue(service, {**os.environ, **environ})
    _pid = os.getpid()
    log.info("tracing: exporting %s spans over OTLP/HTTP to %s", service, traces_endpoint(environ))
    return True


def shutdown_tracing() -> None:
    """Flush the spans still queued and stop the exporter process (a no-op when tracing is off)."""
    global _queue
    queue, _queue = _queue, None
    if queue is not None and _pid == os.getpid():
        queue.close()


def _forget_in_child() -> None:
    global _queue
    _queue = None


os.register_at_fork(after_in_child=_forget_in_child)


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
    return _queue is not None


def metric_families() -> list[Any]:
    """The tracing counters for a server's ``/metrics`` (spans queued for export, spans dropped because the exporter
    fell behind); none while tracing is off."""
    return queue_families(_queue) if _queue is not None else []


def _parent(traceparent: str | None) -> Parent | None:
    """The current span, else the W3C traceparent (version 00) as a remote parent, else ``None`` (a root)."""
    current = _current.get()
    if current is not None:
        return (current.trace_id, current.span_id, current.sampled, False)
    if not traceparent or len(traceparent) != 55 or (match := _TRACEPARENT.match(traceparent)) is None:
        return None
    trace_id, span_id, flags = match.groups()
    if trace_id == _NO_TRACE or span_id == _NO_SPAN:
        return None
    return (trace_id, span_id, flags in _SAMPLED, True)


def traceparent_of(current: Span) -> str:
    """The W3C traceparent that names ``current`` as the parent of the work it causes."""
    return current.traceparent()


@contextlib.contextmanager
def span(
    name: str, traceparent: str | None = None, *, kind: str = "internal", attributes: dict[str, Any] | None = None
) -> Iterator[Any]:
    """A span around the block (the current one inside it), a child of the current span or else of
    ``traceparent``; ``None`` when tracing is off. An exception leaving the block is recorded on it. The span keeps
    ``attributes`` as its own (a dict made for it)."""
    if _queue is None:
        yield None
        return
    current = Span(name, KINDS[kind], _parent(traceparent), attributes)
    token = _current.set(current)
    try:
        yield current
    except BaseException as exc:
        current.record_exception(exc)
        raise
    finally:
        _current.reset(token)
        current.end()


def start_span(
    name: str, traceparent: str | None, *, kind: str = "internal", attributes: dict[str, Any] | None = None
) -> Span | None:
    """A started span (not made current), a child of the current span or else of ``traceparent``; ``None`` when
    tracing is off. The caller ends it with ``end_span``; the span keeps ``attributes`` as its own."""
    if _queue is None:
        return None
    return Span(name, KINDS[kind], _parent(traceparent), attributes)


def end_span(current: Span | None, error: str | None = None) -> None:
    """End a span from ``start_span`` (``None``: tracing off), with status error and ``error`` when given."""
    if current is None:
        return
    if error is not None:
        current.set_error(error)
    current.end()


@contextlib.contextmanager
def activated(current: Span | None) -> Iterator[None]:
    """Make a started span the current one for the block (so events sent there are its children)."""
    if current is None:
        yield
        return
    token = _current.set(current)
    try:
        yield
    finally:
        _current.reset(token)


def producer_traceparent(name: str, traceparent: str | None, attributes: dict[str, Any] | None = None) -> str:
    """Record a producer span for an event about to be sent (a child of the current span, else of the cause's
    ``traceparent``, else a root) and return its traceparent for the event; tracing must be on."""
    produced = Span(name, KINDS["producer"], _parent(traceparent), attributes)
    produced.end()
    return produced.traceparent()


def mark_error(current: Span | None, message: str) -> None:
    """Set ``current``'s status to error with ``message`` (``current`` may be ``None``: tracing off)."""
    if current is not None:
        current.set_error(message)


__all__ = [
    "Span",
    "activated",
    "configure_tracing",
    "enabled",
    "end_span",
    "mark_error",
    "metric_families",
    "producer_traceparent",
    "sampler_of",
    "shutdown_tracing",
    "span",
    "start_span",
    "traced",
    "traceparent_of",
    "tracing_wanted",
]
