"""Echo in knflow's function shape: answers each event with ``dev.knflow.echo.reply`` carrying the same data."""

from __future__ import annotations

from cloudevents.core.v1.event import CloudEvent

from eventing.events import new_event
from functions.runtime.context import Context

REPLY = "dev.knflow.echo.reply"


async def handle(event: CloudEvent, ctx: Context) -> CloudEvent | None:
    """Reply with the event's data; an event of type ``...noreply`` gets no reply."""
    if event.get_type().endswith(".noreply"):
        return None
    return new_event(REPLY, f"/knflow/functions/{ctx.function}", event.get_data(), cause=event)
