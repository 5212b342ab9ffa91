"""The arrival event every data source produces: one object landed in a bucket.

Its type and the extensions it carries come from the composition that runs the sources
(``eventing.arrival_type``, ``eventing.arrival_pipeline``); eventing itself gives objects no meaning.
"""

from __future__ import annotations

import hashlib

from cloudevents.core.v1.event import CloudEvent

from eventing.events import PIPELINE, new_event
from infra.settings import EventingSettings


def arrival_event(
    config: EventingSettings, source: str, bucket: str, key: str, size: int, etag: str, store: str
) -> CloudEvent:
    """An arrival event starting a new run; its id is stable per object version (idempotent redelivery)."""
    data = {"bucket": bucket, "key": key, "size": size, "etag": etag, "store": store}
    event_id = hashlib.sha256(f"{store}|{bucket}|{key}|{etag}".encode()).hexdigest()[:32]
    extensions = {PIPELINE: config.arrival_pipeline} if config.arrival_pipeline else None
    event = new_event(config.arrival_type, source, data, subject=key, extensions=extensions)
    attributes = dict(event.get_attributes())
    attributes["id"] = event_id
    return CloudEvent(attributes, data)
