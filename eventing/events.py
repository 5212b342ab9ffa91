"""CloudEvents as knflow's platform makes them: the run extensions (``runid``, ``pipeline``, ``namespace``,
``traceparent``), the delivery failure report ``step.failed``, and event construction.

The lifecycle's own event types are the lifecycle's business: see ``functions.contract``.
"""

from __future__ import annotations

import os
import re
import uuid
from typing import Any

from cloudevents.core.v1.event import CloudEvent

from infra import tracing
from infra.errors import InvalidRequest
from infra.namespaces import of_extension

SPECVERSION = "1.0"

#: Published by delivery when an event's retries are spent (the dead-letter report of every pipeline).
STEP_FAILED = "dev.knflow.step.failed"

RUNID = "runid"
PIPELINE = "pipeline"  # the pipeline whose triggers take this run's events
NAMESPACE = "namespace"  # the team the run belongs to (absent: ``default``); its artifacts live under its prefix
TRACEPARENT = "traceparent"
PARTITIONKEY = "partitionkey"  # the CloudEvents partitioning extension: delivery is ordered per key
#: The span id of the cause's ``traceparent``: what lets a run's trace be drawn from its events alone.
PARENTSPAN = "knflowparentspan"
#: Extensions an event caused by another inherits from it: they tie a run's events together.
RUN_EXTENSIONS = (RUNID, PIPELINE, NAMESPACE)
_TRACEPARENT_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


class InvalidEvent(InvalidRequest):
    """A request or message that is not a valid CloudEvent; servers answer 400 with the reason."""


def new_runid() -> str:
    """A fresh lifecycle run id."""
    return f"run-{uuid.uuid4().hex[:16]}"


def new_traceparent(trace_id: str | None = None) -> str:
    """A W3C traceparent with a new span id (and a new trace id unless one is given)."""
    ids = os.urandom(8 if trace_id else 24).hex()  # one read of the system's randomness for both ids
    return f"00-{trace_id or ids[16:]}-{ids[:16]}-01"


def child_traceparent(parent: str | None) -> str:
    """The traceparent of work caused by ``parent``: same trace, new span."""
    match = _TRACEPARENT_RE.match(parent or "")
    return new_traceparent(match.group(1) if match else None)


def span_id_of(traceparent: str | None) -> str | None:
    """The span id a W3C traceparent names, ``None`` when it is not one."""
    match = _TRACEPARENT_RE.match(traceparent or "")
    return match.group(2) if match else None


def event_traceparent(type: str, parent: str | None, runid: str | None = None) -> str:
    """The traceparent of a new event of ``type`` caused by ``parent`` (a traceparent or ``None``): with tracing on,
    an exported producer span (a child of the active span, e.g. a function's invocation); else a fresh child."""
    if not tracing.enabled():
        return child_traceparent(parent)
    return tracing.producer_traceparent(f"emit {type}", parent, {"cloudevents.event_type": type, RUNID: runid or ""})


def new_event(
    type: str,
    source: str,
    data: Any = None,
    *,
    cause: CloudEvent | None = None,
    runid: str | None = None,
    subject: str | None = None,
    datacontenttype: str | None = "application/json",
    extensions: dict[str, Any] | None = None,
) -> CloudEvent:
    """Build a CloudEvent carrying ``runid`` and ``traceparent``.

    With ``cause``, the new event continues the cause's run (``runid``, ``pipeline``, ``namespace``) and trace;
    otherwise it starts a new run (unless ``runid`` is given).
    """
    attributes: dict[str, Any] = {"type": type, "source": source, "specversion": SPECVERSION}
    parent = None
    if cause is not None:
        runid = runid or cause.get_extension(RUNID)
        for name in (PIPELINE, NAMESPACE):
            if cause.get_extension(name) is not None:
                attributes[name] = cause.get_extension(name)
        parent = cause.get_extension(TRACEPARENT)
        if (parent_span := span_id_of(parent)) is not None:
            attributes[PARENTSPAN] = parent_span
    attributes[RUNID] = runid = runid or new_runid()
    attributes[TRACEPARENT] = event_traceparent(type, parent, runid)
    if subject is not None:
        attributes["subject"] = subject
    if data is not None and datacontenttype is not None:
        attributes["datacontenttype"] = datacontenttype
    if extensions:
        attributes.update(extensions)
    try:
        return CloudEvent(attributes, data)
    except (ValueError, TypeError) as exc:
        raise InvalidEvent(f"cannot build event: {exc}") from None


def continue_run(reply: CloudEvent, cause: CloudEvent) -> CloudEvent:
    """The reply with the cause's run extensions (runid, pipeline) and a child ``traceparent`` where it set none
    itself, so a function that builds its reply without them still answers within its run, pipeline and trace."""
    mine, theirs = reply.get_attributes(), cause.get_attributes()  # an extension is an attribute (SDK contract)
    missing = {n: theirs[n] for n in RUN_EXTENSIONS if mine.get(n) is None and theirs.get(n) is not None}
    if mine.get(TRACEPARENT) is None:  # the reply continues the cause's trace too
        parent = theirs.get(TRACEPARENT)
        missing[TRACEPARENT] = event_traceparent(mine["type"], parent, mine.get(RUNID) or theirs.get(RUNID))
        if (parent_span := span_id_of(parent)) is not None:
            missing[PARENTSPAN] = parent_span
    if not missing:
        return reply
    from eventing.bindings import ReadEvent  # bindings imports this module

    # the reply was checked when it was made, the cause when it was read, the traceparent is made here: not again
    return ReadEvent({**mine, **missing}, reply.get_data())


def namespace_of(event: CloudEvent) -> str:
    """The namespace an event's run belongs to (``default`` when it names none)."""
    return of_extension(event.get_extension(NAMESPACE))


def runid_of(event: CloudEvent) -> str | None:
    """The run an event belongs to, if it says."""
    return event.get_extension(RUNID)


def partition_key(event: CloudEvent) -> str | None:
    """The key delivery is ordered by: the ``partitionkey`` extension, else the ``runid``."""
    return event.get_extension(PARTITIONKEY) or event.get_extension(RUNID)


def describe(event: CloudEvent) -> str:
    """A short human label for logs: type, id and run."""
    return f"{event.get_type()} id={event.get_id()} runid={runid_of(event)}"
