"""Event sources: turn the outside world (bucket notifications, webhooks, a schedule) into CloudEvents.

Each source has ``routes()`` (aiohttp routes it adds to the broker, under ``/sources/``),
``async start(publish)`` and ``async stop()``; the broker runs ``default_sources(settings)``:

- ``minio.MinioWebhookSource``  ``POST /sources/minio``: MinIO's webhook target (Bearer token).
- ``minio.MinioKafkaSource``  MinIO's Kafka target topic (``eventing.minio_kafka_topic``).
- ``filestore.FileStoreWatcher``  objects landing under ``eventing.arrival_prefix`` of a ``file://`` store.
- ``s3poll.S3PollingSource``  the same for an ``s3://`` store, by listing it (for servers that send no notifications).
  ``eventing.s3_arrivals`` says what announces objects of an ``s3://`` store: ``poll``, ``notifications`` (the MinIO
  sources) or ``both`` (the default; one ``marker.ArrivalMarker`` keeps them from announcing an object twice).

The arrival sources (MinIO, file store) run only when ``eventing.arrival_type`` says what a landed object
becomes; knflow's platform sets it to the lifecycle's ``data.arrived`` (``functions.contract``). They skip
objects ``arrival.announces`` says no to (``eventing.arrival_ignore`` names, objects marked ``ANNOUNCED``).
- ``webhook.WebhookSource``  ``POST /sources/webhook``: any JSON, HMAC-SHA256 signed.
- ``ping.PingSource``  a cron schedule (``eventing.ping_schedule``).
- ``ping.PingSources``  ping sources added and removed at runtime (``PUT``/``DELETE /sources/ping/{name}``),
  persisted beside the broker's triggers; always run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from cloudevents.core.v1.event import CloudEvent

from infra.settings import Settings

Publish = Callable[[CloudEvent], Awaitable[None]]


class Source(Protocol):
    """Something that publishes events into the broker."""

    def routes(self) -> list[web.RouteDef]: ...

    async def start(self, publish: Publish) -> None: ...

    async def stop(self) -> None: ...


def default_sources(settings: Settings) -> list[Any]:
    """The sources the broker runs from its settings."""
    from eventing.registry import state_dir
    from eventing.sources.ping import PingSource, PingSources
    from eventing.sources.webhook import WebhookSource

    ev = settings.eventing
    sources: list[Any] = [PingSources(state_dir(settings) / "pingsources.json")]
    if ev.webhook_type or ev.arrival_type:
        seen = settings.data_dir / "sources" / "webhook-seen.json"
        kind = ev.webhook_type or ev.arrival_type
        sources.append(WebhookSource(ev.webhook_secret, ev.webhook_window_s, kind, seen, ev.arrival_pipeline))
    if ev.arrival_type:  # something says what a landed object means: arrival sources
        sources += _arrival_sources(settings)
    if ev.ping_schedule:
        sources.append(PingSource("default", ev.ping_schedule, _ping_data(ev.ping_data)))
    return sources


def _arrival_sources(settings: Settings) -> list[Any]:
    """The sources announcing objects that land in the store: by notifications, by watching it, or both."""
    from eventing.sources.filestore import FileStoreWatcher
    from eventing.sources.marker import ArrivalMarker
    from eventing.sources.minio import MinioKafkaSource, MinioWebhookSource
    from eventing.sources.s3poll import S3PollingSource

    ev, store = settings.eventing, settings.artifacts
    sources: list[Any] = []
    marker = None
    if store.scheme == "file" and ev.watch_raw:
        state = settings.data_dir / "sources" / "filestore-seen.json"
        assert store.path is not None, "a file:// store location has its directory"
        sources.append(FileStoreWatcher(store.path, state, ev))
    if store.scheme == "s3" and ev.s3_arrivals in ("poll", "both"):
        marker = ArrivalMarker.load(s3_marker_path(settings), ev.s3_poll_max_keys)
        sources.append(S3PollingSource(store, marker, ev))
    if store.scheme == "s3" and ev.s3_arrivals == "poll":
        refusal = "this broker polls the bucket and takes no MinIO notifications (eventing.s3_arrivals = poll)"
        return [*sources, MinioWebhookSource(settings, refusal=refusal)]
    sources.append(MinioWebhookSource(settings, marker))
    if ev.minio_kafka_topic:
        servers = ev.minio_kafka_servers.split(",") if ev.minio_kafka_servers else list(settings.broker.servers)
        sources.append(MinioKafkaSource(settings, servers, ev.minio_kafka_topic, marker))
    return sources


def s3_marker_path(settings: Settings) -> Path:
    """Where the broker keeps what it has announced of the configured bucket (one file per endpoint and bucket)."""
    store = settings.artifacts
    digest = hashlib.sha256(f"{store.endpoint}/{store.bucket}".encode()).hexdigest()[:10]
    return settings.data_dir / "sources" / f"s3-seen-{store.bucket}-{digest}.json"


def _ping_data(text: str) -> Any:
    """``eventing.ping_data`` as JSON when it parses, else as a message."""
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return {"message": text}
