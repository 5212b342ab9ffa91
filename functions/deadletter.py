"""Dead-letter sink for Knative: turns an event Knative gave up on into ``dev.knflow.step.failed``.

Locally knflow's broker publishes ``step.failed`` itself when a delivery's retries are spent. A
Knative broker instead sends the original event to the Trigger's ``deadLetterSink`` with the
``knativeerrordest``, ``knativeerrorcode`` and ``knativeerrordata`` (base64 body) extensions; this
function, as that sink, emits the same ``step.failed`` event into the broker (``K_SINK``), so the
lifecycle (e.g. tune counting a failed trial) behaves the same on both. The id is derived from the
failed event and its destination, so a redelivered dead letter repeats the same event id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from cloudevents.core.v1.event import CloudEvent

from eventing.events import STEP_FAILED, new_event
from functions.runtime.context import Context

SOURCE = "/knflow/functions/deadletter"


def step_failed(event: CloudEvent) -> CloudEvent:
    """The ``step.failed`` event for a dead-lettered ``event`` (data as the local broker writes it)."""
    dest = event.get_extension("knativeerrordest") or ""
    code = event.get_extension("knativeerrorcode")
    raw = event.get_extension("knativeerrordata") or ""
    try:
        error = base64.b64decode(raw, validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        error = str(raw)
    data = {
        "event_id": event.get_id(),
        "event_type": event.get_type(),
        "trigger": None,  # Knative does not say which Trigger; the subscriber does
        "subscriber": dest,
        "status": int(code) if str(code or "").isdigit() else None,
        "error": error,
        "attempts": None,
        "dead_letter_sink": SOURCE,
    }
    digest = hashlib.sha256(f"{event.get_id()}|{dest}".encode()).hexdigest()[:12]
    return new_event(STEP_FAILED, SOURCE, data, cause=event, extensions={"id": f"{event.get_id()}.failed.{digest}"})


async def handle(event: CloudEvent, ctx: Context) -> None:
    """Emit ``step.failed`` for the dead letter into the broker; a failed ``step.failed`` is only logged."""
    if event.get_type() == STEP_FAILED:  # never report a report: that could loop
        ctx.log.error("step.failed event %s was dead-lettered itself; dropped", event.get_id())
        return None
    await ctx.emit(step_failed(event))
    return None
