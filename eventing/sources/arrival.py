"""The ``dev.knflow.data.arrived`` event every data source produces: one object landed in a bucket."""

from __future__ import annotations

import hashlib

from cloudevents.core.v1.event import CloudEvent

from eventing.events import DATA_ARRIVED, new_event


def arrival_event(source: str, bucket: str, key: str, size: int, etag: str, store: str) -> CloudEvent:
    """A data-arrival event starting a new run; its id is stable per object version (idempotent redelivery)."""
    data = {"bucket": bucket, "key": key, "size": size, "etag": etag, "store": store}
    event_id = hashlib.sha256(f"{store}|{bucket}|{key}|{etag}".encode()).hexdigest()[:32]
    event = new_event(DATA_ARRIVED, source, data, subject=key)
    attributes = dict(event.get_attributes())
    attributes["id"] = event_id
    return CloudEvent(attributes, data)
