"""Data arrival for ``s3://`` stores whose server sends no notifications (SeaweedFS, S3 without an event bus).

The broker lists ``eventing.arrival_prefix`` of the bucket (ListObjectsV2) every ``eventing.s3_poll_interval_s`` and
announces each object version (key, ETag) its ``ArrivalMarker`` has not seen; the marker lives in the broker's data
dir and is saved after publishing, so an object is announced once across broker restarts (after a crash between the
two, at worst again with the same event id). Its first listing — no marker yet — is recorded without announcing
anything, as a new trigger starts at the latest event: ``knflow.Client.submit_key`` starts a run on an object that was
there before. A listing carries no user metadata, so each new object is looked at once (HEAD) to skip those its writer
announced itself (``arrival.ANNOUNCED``: the knflow server's uploads). An S3 server that fails is retried with backoff
and logged at most once a minute; the broker keeps running.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web

from eventing.sources.arrival import announces, arrival_event
from eventing.sources.marker import ArrivalMarker
from infra.aio import cancel_and_wait
from infra.errors import KnflowError, NotFound
from infra.settings import EventingSettings, StoreLocation
from infra.store import ObjectInfo
from infra.store_s3 import S3Store

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 60.0
LOG_EVERY_S = 60.0


class FailureLog:
    """Logs a failing operation at most once per ``every_s`` (with how many failures each line stands for) and its
    recovery."""

    def __init__(self, what: str, every_s: float = LOG_EVERY_S):
        self.what, self.every_s = what, every_s
        self.failures, self._unlogged, self._last = 0, 0, float("-inf")

    def failed(self, exc: BaseException) -> None:
        self.failures, self._unlogged = self.failures + 1, self._unlogged + 1
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        expected = isinstance(exc, KnflowError | OSError)
        more = f" ({self._unlogged} failures since the last report)" if self._unlogged > 1 else ""
        log.warning("%s failed%s: %s; retrying", self.what, more, exc, exc_info=None if expected else exc)
        self._last, self._unlogged = now, 0

    def succeeded(self) -> None:
        if self.failures:
            log.info("%s works again after %d failure(s)", self.what, self.failures)
        self.failures, self._unlogged, self._last = 0, 0, float("-inf")


class S3PollingSource:
    """Publishes an arrival event for every new object version under the arrival prefix of one S3 bucket."""

    def __init__(self, location: StoreLocation, marker: ArrivalMarker, config: EventingSettings):
        self.location, self.marker, self.config = location, marker, config
        self._store: S3Store | None = None
        self.prefix, self.interval_s = config.arrival_prefix, max(0.05, config.s3_poll_interval_s)
        self.failures = FailureLog(f"polling {location.url} {self.prefix}")
        self._task: asyncio.Task | None = None

    def routes(self) -> list[web.RouteDef]:
        return []

    async def start(self, publish: Any) -> None:
        self._task = asyncio.create_task(self._run(publish), name="s3-poll")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self.marker.save()

    async def _run(self, publish: Any) -> None:
        delay = self.interval_s
        while True:
            try:
                await self.scan(publish)
                self.failures.succeeded()
                delay = self.interval_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker outlives any failure of the S3 server; each is logged, bounded
                self.failures.failed(exc)
                delay = min(max(self.interval_s, MAX_BACKOFF_S), delay * 2)
            await asyncio.sleep(delay)

    async def scan(self, publish: Any) -> int:
        """List the prefix once and publish every unseen object version; returns how many were published."""
        listed_at = time.time()
        objects = await asyncio.to_thread(self._list)
        if not self.marker.started:
            for info in objects:
                self.marker.record(info.key, info.etag, info.modified.timestamp())
            self.marker.start()
            self.marker.save()
            log.info(
                "polling %s%s: %d object(s) already there are taken as seen",
                self.location.url,
                self.prefix,
                len(objects),
            )
            return 0
        fresh = [o for o in objects if self.marker.is_new(o.key, o.etag, o.modified.timestamp())]
        announced = 0
        for info in fresh:
            announced += await self._announce(info, publish)
        self.marker.prune({o.key for o in objects}, listed_at)
        self.marker.save()
        if fresh:
            log.info(
                "announced %d of %d new object(s) under %s in %s", announced, len(fresh), self.prefix, self.location.url
            )
        return announced

    def store(self) -> S3Store:
        """The bucket, opened (and created when the URL says ``create=true``) on first use, in a worker thread."""
        if self._store is None:
            # No store-level retries: the polling loop retries, and logs at its own pace.
            self._store = S3Store(self.location, retries=0)
        return self._store

    def _list(self) -> list[ObjectInfo]:
        return list(self.store().list(self.prefix))

    async def _announce(self, listed: ObjectInfo, publish: Any) -> bool:
        """Publish the arrival of one listed object unless it is not to be announced or already was."""
        if not announces(self.config, listed.key):
            self.marker.record(listed.key, listed.etag, listed.modified.timestamp())
            return False
        try:
            info = await asyncio.to_thread(self.store().stat, listed.key)
        except NotFound:  # deleted since the listing
            return False
        modified = info.modified.timestamp()
        if not announces(self.config, info.key, info.metadata):
            self.marker.record(info.key, info.etag, modified)
            return False
        if not self.marker.claim(info.key, info.etag, modified):  # a notification announced it first
            return False
        bucket, store = self.location.bucket, self.location.url
        event = arrival_event(self.config, f"knflow/s3poll/{bucket}", bucket, info.key, info.size, info.etag, store)
        try:
            await publish(event)
        except BaseException:
            self.marker.forget(info.key, info.etag)
            raise
        return True
