"""knflow's event contract: the CloudEvent types, the ``runid``/``traceparent`` extensions, and event construction."""

from __future__ import annotations

import os
import re
import uuid
from typing import Any

from cloudevents.core.v1.event import CloudEvent

from infra.errors import InvalidRequest

SPECVERSION = "1.0"

DATA_ARRIVED = "dev.knflow.data.arrived"
DATASET_INGESTED = "dev.knflow.dataset.ingested"
FEATURES_READY = "dev.knflow.features.ready"
TRIAL_REQUESTED = "dev.knflow.trial.requested"
MODEL_TRAINED = "dev.knflow.model.trained"
TUNE_COMPLETED = "dev.knflow.tune.completed"
MODEL_REGISTERED = "dev.knflow.model.registered"
MODEL_DEPLOYED = "dev.knflow.model.deployed"
STEP_FAILED = "dev.knflow.step.failed"

EVENT_TYPES: tuple[str, ...] = (
    DATA_ARRIVED,
    DATASET_INGESTED,
    FEATURES_READY,
    TRIAL_REQUESTED,
    MODEL_TRAINED,
    TUNE_COMPLETED,
    MODEL_REGISTERED,
    MODEL_DEPLOYED,
    STEP_FAILED,
)

RUNID = "runid"
TRACEPARENT = "traceparent"
PARTITIONKEY = "partitionkey"  # the CloudEvents partitioning extension: delivery is ordered per key
_TRACEPARENT_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


class InvalidEvent(InvalidRequest):
    """A request or message that is not a valid CloudEvent; servers answer 400 with the reason."""


def new_runid() -> str:
    """A fresh lifecycle run id."""
    return f"run-{uuid.uuid4().hex[:16]}"


def new_traceparent(trace_id: str | None = None) -> str:
    """A W3C traceparent with a new span id (and a new trace id unless one is given)."""
    trace_id = trace_id or os.urandom(16).hex()
    return f"00-{trace_id}-{os.urandom(8).hex()}-01"


def child_traceparent(parent: str | None) -> str:
    """The traceparent of work caused by ``parent``: same trace, new span."""
    match = _TRACEPARENT_RE.match(parent or "")
    return new_traceparent(match.group(1) if match else None)


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

    With ``cause``, the new event continues the cause's run and trace; otherwise it starts
    a new run (unless ``runid`` is given).
    """
    attributes: dict[str, Any] = {"type": type, "source": source, "specversion": SPECVERSION}
    if cause is not None:
        runid = runid or cause.get_extension(RUNID)
        attributes[TRACEPARENT] = child_traceparent(cause.get_extension(TRACEPARENT))
    else:
        attributes[TRACEPARENT] = new_traceparent()
    attributes[RUNID] = runid or new_runid()
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


def runid_of(event: CloudEvent) -> str | None:
    """The run an event belongs to, if it says."""
    return event.get_extension(RUNID)


def partition_key(event: CloudEvent) -> str | None:
    """The key delivery is ordered by: the ``partitionkey`` extension, else the ``runid``."""
    return event.get_extension(PARTITIONKEY) or event.get_extension(RUNID)


def describe(event: CloudEvent) -> str:
    """A short human label for logs: type, id and run."""
    return f"{event.get_type()} id={event.get_id()} runid={runid_of(event)}"
