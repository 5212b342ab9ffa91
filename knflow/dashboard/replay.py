"""Replaying a dead-lettered event: the original, re-published into the broker under a new id.

Why a new id: every handler is idempotent on the event id, so re-sending the same id may be skipped
as a duplicate. The replay keeps everything else of the original (type, source, subject, ``runid``,
``mode``, data), continues its trace, and says where it came from with the extension
``knflowreplayof=<original id>``, so the run's history shows the retry and the dashboard links it.
"""

from __future__ import annotations

from cloudevents.core.v1.event import CloudEvent

from eventing.events import TRACEPARENT, child_traceparent
from knflow.dashboard.runs import REPLAY_OF

#: Attributes the replay does not copy: a new id and time are generated, the replay marker is set anew.
_FRESH = {"id", "time", TRACEPARENT, REPLAY_OF}


def replay_event(original: CloudEvent) -> CloudEvent:
    """A copy of ``original`` with a new id and time, the next span of its trace, and ``knflowreplayof``."""
    attributes = {k: v for k, v in original.get_attributes().items() if k not in _FRESH}
    attributes[TRACEPARENT] = child_traceparent(original.get_extension(TRACEPARENT))
    attributes[REPLAY_OF] = original.get_id()
    return CloudEvent(attributes, original.get_data())
