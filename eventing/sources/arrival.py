"""The arrival event every data source produces: one object landed in a bucket; and which objects get none.

Its type and the extensions it carries come from the composition that runs the sources
(``eventing.arrival_type``, ``eventing.arrival_pipeline``); eventing itself gives objects no meaning.
An object is not announced when its name matches one of ``eventing.arrival_ignore`` (comma-separated
globs on the file name, e.g. companion files that are not data on their own) or when its writer marked it
with the metadata ``ANNOUNCED``: a writer that publishes the arrival itself (with more in the event than
a store can say) puts that mark, so the object does not start a second run.
"""

from __future__ import annotations

import collections
import fnmatch
import hashlib
import time
from collections.abc import Mapping

from cloudevents.core.v1.event import CloudEvent

from eventing.events import PIPELINE, new_event
from infra.settings import EventingSettings

#: Object metadata (``x-amz-meta-knflow-announced`` on S3) of an object whose writer announces its arrival itself.
ANNOUNCED = "knflow-announced"


def announced_by_writer(metadata: Mapping[str, str] | None) -> bool:
    """Whether object metadata carries ``ANNOUNCED`` (S3's ``X-Amz-Meta-`` prefix and any case accepted)."""
    if not isinstance(metadata, Mapping):
        return False
    return any(name.lower().removeprefix("x-amz-meta-") == ANNOUNCED for name in metadata)


def ignored(config: EventingSettings, key: str) -> bool:
    """Whether ``key``'s file name matches one of ``eventing.arrival_ignore``."""
    name = key.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(name, p.strip()) for p in config.arrival_ignore.split(",") if p.strip())


def announces(config: EventingSettings, key: str, metadata: Mapping[str, str] | None = None) -> bool:
    """Whether a source announces the object ``key``: under the arrival prefix, not ignored, not self-announced."""
    return key.startswith(config.arrival_prefix) and not ignored(config, key) and not announced_by_writer(metadata)


class RunRate:
    """At most ``per_minute`` arrivals per folder under the arrival prefix (a data set) in any 60 s; a source that
    is told no answers 429 (MinIO retries) or announces later."""

    def __init__(self, config: EventingSettings, per_minute: int):
        self.prefix, self.per_minute = config.arrival_prefix, per_minute
        self._times: dict[str, collections.deque[float]] = {}

    def folder(self, key: str) -> str:
        return key[len(self.prefix) :].split("/", 1)[0]

    def take(self, keys: list[str], now: float | None = None) -> bool:
        """Count these arrivals if every folder has room for its share within the minute; else count none."""
        now = time.monotonic() if now is None else now
        wanted = collections.Counter(self.folder(k) for k in keys)
        for folder, n in wanted.items():
            window = self._times.setdefault(folder, collections.deque())
            while window and now - window[0] >= 60.0:
                window.popleft()
            if len(window) + n > self.per_minute:
                return False
        for folder, n in wanted.items():
            self._times[folder].extend([now] * n)
        return True


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
