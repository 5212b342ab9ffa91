"""MinIO bucket notifications (plain JSON, not CloudEvents) to arrival events (``eventing.arrival_type``).

Two of MinIO's notification targets are read: the webhook target (``POST /sources/minio``, with
``Authorization: Bearer <eventing.minio_token>`` when a token is configured) and the Kafka target
(message key ``bucket/key``, no headers, the same JSON as value). ``Records[].s3.object.key`` is
URL-encoded by MinIO and decoded here. Only ``s3:ObjectCreated:*`` records for keys under
``eventing.arrival_prefix`` become arrival events (``eventing.arrival_type``), one new run per object, except
ignored names and objects whose ``userMetadata`` (MinIO sends the object's ``X-Amz-Meta-*``) carries
``arrival.ANNOUNCED``: their writer announced them itself. With the polling source beside them (``eventing.s3_arrivals``
``both``) both claim each object version in one ``ArrivalMarker``, so it is announced once, by whichever is first.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
from typing import Any
from urllib.parse import unquote_plus

import orjson
import pydantic
from aiohttp import web
from cloudevents.core.v1.event import CloudEvent
from kafka import KafkaConsumer
from kafka.errors import KafkaError

from eventing.sources.arrival import RunRate, announces, arrival_event
from eventing.sources.marker import ArrivalMarker
from infra.errors import InvalidRequest, KnflowError, NotFound
from infra.guard import access
from infra.http import error_response
from infra.settings import Settings
from infra.validation import parse

log = logging.getLogger(__name__)
MAX_RECORDS = 100  # records per notification: MinIO sends one per object; more is not a notification


def store_url_for(settings: Settings, bucket: str) -> str:
    """The artifacts URL of ``bucket``: the configured store's URL when it is that bucket."""
    if settings.artifacts.scheme == "s3" and settings.artifacts.bucket == bucket:
        return settings.artifacts.url
    return f"s3://{bucket}"


class _Object(pydantic.BaseModel):
    key: str = pydantic.Field(min_length=1, max_length=4096)
    size: pydantic.NonNegativeInt = 0
    eTag: str = pydantic.Field("", max_length=256)
    userMetadata: dict[str, str] | None = pydantic.Field(None, max_length=64)


class _Bucket(pydantic.BaseModel):
    name: str = pydantic.Field(min_length=1, max_length=255)


class _S3(pydantic.BaseModel):
    bucket: _Bucket
    object: _Object


class _Record(pydantic.BaseModel):
    """One record of a MinIO notification (S3's event format): the fields knflow reads, typed."""

    eventName: str = pydantic.Field("", max_length=256)
    s3: _S3


class _Notification(pydantic.BaseModel):
    EventName: str = pydantic.Field("", max_length=256)
    Records: list[_Record] = pydantic.Field(max_length=MAX_RECORDS)


def notification_events(payload: Any, settings: Settings) -> list[CloudEvent]:
    """The arrival events of one MinIO notification document (at most ``MAX_RECORDS`` records)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("Records"), list):
        raise InvalidRequest("not a MinIO bucket notification: expected a JSON object with Records")
    if len(payload["Records"]) > MAX_RECORDS:
        raise InvalidRequest(f"a notification may hold {MAX_RECORDS} records at most, not {len(payload['Records'])}")
    note = parse(_Notification, payload, "MinIO notification")
    events = []
    for record in note.Records:
        name = record.eventName or note.EventName
        key = unquote_plus(record.s3.object.key)
        if not name.startswith("s3:ObjectCreated:") or not announces(
            settings.eventing, key, record.s3.object.userMetadata
        ):
            continue
        bucket, obj = record.s3.bucket.name, record.s3.object
        source = f"minio:s3:{bucket}"
        store = store_url_for(settings, bucket)
        events.append(arrival_event(settings.eventing, source, bucket, key, obj.size, obj.eTag, store))
    return events


async def publish_unclaimed(
    events: list[CloudEvent], settings: Settings, marker: ArrivalMarker | None, publish: Any
) -> int:
    """Publish the events, except those of the configured bucket whose object version ``marker`` has seen; how many.

    A claim whose publishing fails is given back, so the object is announced when it is tried again.
    """
    published = 0
    for event in events:
        data = event.get_data()
        assert isinstance(data, dict), "a MinIO arrival carries its object's record"
        ours = marker if data["store"] == settings.artifacts.url else None  # the marker is the configured bucket's
        if ours is not None and not ours.claim(data["key"], data["etag"]):
            continue
        try:
            await publish(event)
        except BaseException:
            if ours is not None:
                ours.forget(data["key"], data["etag"])
            raise
        published += 1
    return published


class MinioWebhookSource:
    """MinIO's webhook notification target: ``POST /sources/minio``."""

    def __init__(self, settings: Settings, marker: ArrivalMarker | None = None, *, refusal: str = ""):
        self.settings, self.marker = settings, marker
        self.refusal = refusal  # set: notifications are not taken here, and this says why (404)
        self.rate = RunRate(settings.eventing, settings.security.runs_per_minute)
        self._publish: Any = None

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/sources/minio", self._handle)]

    async def start(self, publish: Any) -> None:
        self._publish = publish

    async def stop(self) -> None:
        self._publish = None

    @access("ingress")
    async def _handle(self, request: web.Request) -> web.Response:
        if self.refusal:
            raise NotFound(self.refusal)
        token = self.settings.eventing.minio_token
        if token and not hmac.compare_digest(request.headers.get("Authorization", ""), f"Bearer {token}"):
            raise KnflowError("missing or wrong bearer token", status=401)
        try:
            payload = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise InvalidRequest("notification is not JSON") from None
        events = notification_events(payload, self.settings)
        if not self.rate.take([e.get_subject() or "" for e in events]):
            limit = self.settings.security.runs_per_minute
            why = f"more than {limit} runs a minute for one data set (security.runs_per_minute); try again later"
            return error_response(KnflowError(why, status=429), {"Retry-After": "60"})
        accepted = await publish_unclaimed(events, self.settings, self.marker, self._publish)
        return web.json_response({"accepted": accepted}, status=202 if accepted else 200)


class MinioKafkaSource:
    """MinIO's Kafka notification target: a consumer group ``knflow-minio-source`` on ``topic``."""

    GROUP = "knflow-minio-source"

    def __init__(self, settings: Settings, servers: list[str], topic: str, marker: ArrivalMarker | None = None):
        self.settings, self.servers, self.topic, self.marker = settings, servers, topic, marker
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def routes(self) -> list[web.RouteDef]:
        return []

    async def start(self, publish: Any) -> None:
        loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, args=(loop, publish), name="minio-kafka", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 15)

    def _run(self, loop: asyncio.AbstractEventLoop, publish: Any) -> None:
        try:
            consumer = KafkaConsumer(
                self.topic,
                bootstrap_servers=self.servers,
                group_id=self.GROUP,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=6000,
                heartbeat_interval_ms=1000,
                max_poll_interval_ms=3000,
            )
        except KafkaError as exc:
            log.error("MinIO Kafka source cannot reach %s: %s", self.servers, exc)
            return
        try:
            while not self._stop.is_set():
                batches = consumer.poll(timeout_ms=200)
                for message in (m for msgs in batches.values() for m in msgs):
                    self._forward(loop, publish, message)
                if batches:
                    consumer.commit()  # after every event of the batch is durably in the broker
        finally:
            consumer.close(autocommit=False)

    def _forward(self, loop: asyncio.AbstractEventLoop, publish: Any, message: Any) -> None:
        try:
            events = notification_events(orjson.loads(message.value), self.settings)
        except (orjson.JSONDecodeError, InvalidRequest) as exc:
            log.warning("skipping MinIO notification %s/%s: %s", message.partition, message.offset, exc)
            return
        unclaimed = publish_unclaimed(events, self.settings, self.marker, publish)
        asyncio.run_coroutine_threadsafe(unclaimed, loop).result(60)
