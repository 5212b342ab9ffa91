"""A run's trace drawn from its events alone (no collector): ``GET /api/runs/{runid}/trace``.

Every event carries its ``traceparent`` and, when it was caused by another, ``knflowparentspan`` (the cause's span
id), so the run's events form a tree: one span per event, named by its type, from the moment its cause was appended
(when the work that answered it began) to its own time; the run's first root (the data arrival) spans the whole run.
Delivery failures (``step.failed``) are error spans carrying the trigger, status and attempts. With tracing
exported, the span ids are those of the producer spans in the collector, which adds the deliveries and invocations
in between.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from aiohttp import web
from cloudevents.core.v1.event import CloudEvent

from eventing.events import PARENTSPAN, STEP_FAILED, TRACEPARENT, span_id_of
from infra.guard import access
from infra.http import json_response

#: Data fields copied onto a span's attributes, when the event has them.
_FIELDS = ("trial", "dataset", "name", "version", "trigger", "status", "attempts", "error", "decision", "reason")


def add_routes(app: web.Application, server: Any) -> None:
    """Register ``/api/runs/{runid}/trace`` on the knflow server's app (``server`` has the broker ``history``)."""
    app.router.add_get("/api/runs/{runid}/trace", TraceApi(server).trace)


class TraceApi:
    """The trace handler over the knflow server's event history."""

    def __init__(self, server: Any):
        self.server = server

    @access("viewer")
    async def trace(self, request: web.Request) -> web.Response:
        runid = request.match_info["runid"]
        return json_response(run_trace(await self.server.read_run(request, runid)))  # another namespace's run: 404


def run_trace(events: Sequence[CloudEvent]) -> dict[str, Any]:
    """``{"trace_id", "spans": [...]}`` for a run's events in log order (times in seconds since the epoch)."""
    traced = [e for e in events if span_id_of(e.get_extension(TRACEPARENT)) is not None]
    if not traced:
        return {"trace_id": None, "spans": []}
    by_span = {span_id_of(e.get_extension(TRACEPARENT)): e for e in traced}
    end_of_run = max(_seconds(e) for e in traced)
    spans: list[dict[str, Any]] = []
    for event in by_span.values():
        parent = event.get_extension(PARENTSPAN)
        cause = by_span.get(parent)
        spans.append(_span(event, cause, end_of_run, root=not spans))
    return {"trace_id": _trace_id(traced[0]), "spans": spans}


def _span(event: CloudEvent, cause: CloudEvent | None, end_of_run: float, root: bool) -> dict[str, Any]:
    when = _seconds(event)
    raw = event.get_data()
    data = raw if isinstance(raw, dict) else {}
    attributes: dict[str, Any] = {
        "cloudevents.event_type": event.get_type(),
        "cloudevents.event_id": event.get_id(),
        "cloudevents.source": event.get_source(),
        "knflow.trace_id": _trace_id(event),
    }
    if event.get_subject():
        attributes["cloudevents.subject"] = event.get_subject()
    attributes.update({f"knflow.{k}": data[k] for k in _FIELDS if isinstance(data.get(k), str | int | float)})
    failed = event.get_type() == STEP_FAILED
    return {
        "span_id": span_id_of(event.get_extension(TRACEPARENT)),
        "parent_id": cause_span(cause),
        "name": event.get_type() if not event.get_subject() else f"{event.get_type()} {event.get_subject()}",
        "kind": "consumer" if failed else "producer",
        "start": _seconds(cause) if cause is not None else when,
        "end": end_of_run if root and cause is None else when,
        "status": "error" if failed else "ok",
        "attributes": attributes,
    }


def cause_span(cause: CloudEvent | None) -> str | None:
    """The span id of the event that caused another (``None`` for a root)."""
    return None if cause is None else span_id_of(cause.get_extension(TRACEPARENT))


def _trace_id(event: CloudEvent) -> str:
    return str(event.get_extension(TRACEPARENT)).split("-")[1]


def _seconds(event: CloudEvent) -> float:
    when = event.get_time()
    return when.timestamp() if isinstance(when, datetime) else 0.0
