"""The inference logger: sampled requests and their responses as CloudEvents in KServe's inference-logger format,
published to the broker by one task in batches, off the request path (a full queue drops and counts).

Each logged request is two events, ``org.kubeflow.serving.inference.request`` and ``.response``, sharing one
``id`` (the request's ``Ce-Id`` header, else a new UUID); serving/logevents.py builds them. ``log()`` draws the
sample and appends to a bounded queue; everything else (ids, times, traces, encoding, the POST) is the publisher's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client.core import Metric

from eventing.bindings import BATCH_CONTENT_TYPE
from infra.aio import cancel_and_wait
from infra.asyncclient import AsyncClient
from infra.errors import Unavailable
from infra.httpclient import retryable_status
from infra.metrics import Tally, gauge, registry_of, render
from serving.logevents import (
    ENVELOPE_BYTES,
    Message,
    Stamps,
    Template,
    message_events,
    stamp,
    template,
)

if TYPE_CHECKING:
    from serving.revisions import Revision

log = logging.getLogger(__name__)

ALL, REQUEST, RESPONSE = "all", "request", "response"  # KServe's logger modes
QUEUE_FULL, TOO_LARGE, REFUSED, UNAVAILABLE = "queue_full", "too_large", "refused", "unavailable"
BATCH_BYTES = 1024 * 1024  # per POST, and never above the broker's limit
BATCH_EVENTS = 512
LINGER_S = 0.1  # a woken publisher waits this long for company: one POST then carries a load's worth of events
CHUNK = 32  # messages encoded between two looks at the requests waiting
WARN_EVERY_S = 10.0
RETRY_S = (0.2, 0.5, 1.0, 2.0, 5.0)


@dataclass(frozen=True)
class LogSpec:
    """What a revision logs: which messages (KServe's ``mode``), the share of requests, the deploying run's
    extensions (``runid``, ``pipeline``) the events carry."""

    mode: str = ALL
    sample_rate: float = 1.0
    extensions: dict[str, str] = field(default_factory=dict)


class InferenceLogger:
    """The gateway's logger: ``log()`` on the request path only samples and enqueues; ``run()`` publishes."""

    def __init__(
        self,
        broker_url: str,
        *,
        queue_limit: int,
        queue_bytes: int,
        max_event_bytes: int,
        endpoint_of: Callable[[Revision], str] = lambda _r: "default",
        sample: Callable[[], float] = random.random,
        credentials: dict[str, str] | None = None,
    ):
        self.broker_url = broker_url
        self.credentials = dict(credentials or {})  # Authorization, for a broker that asks for one
        self.queue_limit, self.queue_bytes = queue_limit, queue_bytes
        self.max_event_bytes = max_event_bytes
        self.batch_bytes = min(BATCH_BYTES, max_event_bytes)
        self.endpoint_of, self.sample = endpoint_of, sample
        self.source = "/knflow/serving"
        self.published: Counter[str] = Counter()  # events, per revision
        self.dropped: Counter[tuple[str, str]] = Counter()  # events, per (revision, reason)
        self.encode_s = 0.0  # CPU seconds spent stamping and encoding batches (what logging costs the gateway most)
        self._queue: deque[tuple[Revision, Message]] = deque()
        self._queued_bytes = 0
        self._wake = asyncio.Event()
        self._client = AsyncClient(name="broker")
        self._templates: dict[str, Template] = {}
        self._task: asyncio.Task | None = None
        self._sending = False
        self._warned_at, self._unreported = 0.0, 0
        self._stamps = Stamps()

    # -- the request path --------------------------------------------------------------
    def log(
        self,
        revision: Revision,
        headers: Mapping[str, str],
        body: bytes,
        status: int,
        response: bytes,
        response_type: str = "application/json",
    ) -> None:
        """Queue one answered request (and its response) if the revision logs and the request is sampled."""
        spec = revision.logger
        if spec is None or status != 200 or (spec.sample_rate < 1.0 and self.sample() >= spec.sample_rate):
            return  # KServe logs a response only when it is a 200; a failed request's body may not be one to read
        if spec.mode == REQUEST:
            response = b""
        elif spec.mode == RESPONSE:
            body = b""
        size = len(body) + len(response)
        if size + 4 * ENVELOPE_BYTES > self.max_event_bytes:  # the pair must fit one batch the broker takes
            self._drop(revision.id, TOO_LARGE, (spec.mode == ALL) + 1)
        elif len(self._queue) >= self.queue_limit or self._queued_bytes + size > self.queue_bytes:
            self._drop(revision.id, QUEUE_FULL, (spec.mode == ALL) + 1)
        else:  # everything else (ids, times, traces, encoding) is the publisher's work
            message = Message(time.time(), headers, self.endpoint_of(revision), body, response, response_type)
            self._queue.append((revision, message))
            self._queued_bytes += size
            self._wake.set()

    def _drop(self, revision: str, reason: str, events: int) -> None:
        self.dropped[(revision, reason)] += events
        self._unreported += events
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:  # visible in the logs, at most once per WARN_EVERY_S
            self._warned_at, dropped, self._unreported = now, self._unreported, 0
            total = sum(self.dropped.values())
            log.warning(
                "inference log: dropped %d event(s) since the last report (last: %s, revision %s); %d in all",
                dropped, reason, revision, total,
            )  # fmt: skip

    # -- the publisher ------------------------------------------------------------------
    async def start(self, base_url: str) -> None:
        """Start publishing; ``base_url`` is the gateway's, which the events' ``source`` names."""
        self.source = base_url.rstrip("/")
        self._task = asyncio.create_task(self.run(), name="inference-log")

    async def stop(self, flush_s: float = 2.0) -> None:
        """Publish what is queued (for at most ``flush_s``), then stop."""
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained(), flush_s)
            await cancel_and_wait(self._task)
        await self._client.close()

    async def _drained(self) -> None:
        while self._queue or self._sending:
            await asyncio.sleep(0.01)

    async def run(self) -> None:
        """Take what is queued, in batches, and publish each; one POST in flight (the broker commits it whole)."""
        while True:
            await self._wake.wait()
            await asyncio.sleep(LINGER_S)
            self._wake.clear()
            while self._queue:
                self._sending = True
                try:
                    await self._publish(*await self._batch())
                except Exception:  # a bug here must not end logging for the gateway's life
                    log.exception("inference log: publishing a batch failed")
                finally:
                    self._sending = False

    async def _batch(self) -> tuple[bytes, int, Counter[str]]:
        """A batch off the queue (up to ``batch_bytes`` / ``BATCH_EVENTS``): its JSON body, its event count and the
        events per revision. Encoded ``CHUNK`` messages at a time, letting requests in between."""
        parts: list[bytes] = []
        counts: Counter[str] = Counter()
        events = size = 0
        while self._queue and events < BATCH_EVENTS and size < self.batch_bytes:
            started = time.thread_time()
            chunk, size = self._take(counts, events, size)
            if not chunk:
                break  # the next message would not fit this batch: it starts the next one
            events += len(chunk)
            parts.append(orjson.dumps(chunk)[1:-1])
            self.encode_s += time.thread_time() - started
            await asyncio.sleep(0)
        return b"[" + b",".join(p for p in parts if p) + b"]", events, counts

    def _take(self, counts: Counter[str], events: int, size: int) -> tuple[list[dict[str, Any]], int]:
        """Up to ``CHUNK`` messages' events off the queue, within what the batch (``events``, ``size`` so far) has
        left; the batch's size after them."""
        chunk: list[dict[str, Any]] = []
        for _ in range(CHUNK):
            if not self._queue or events + len(chunk) >= BATCH_EVENTS:
                break
            revision, message = self._queue[0]
            t = self._template(revision)
            grown = size + len(message.body) + len(message.response) + 2 * t.envelope
            if (events or chunk) and grown > self.batch_bytes:
                break
            self._queue.popleft()
            self._queued_bytes -= len(message.body) + len(message.response)
            added = message_events(t, message, stamp(message, self._stamps))
            chunk += added
            counts[revision.id] += len(added)
            size = grown
        return chunk, size

    def _template(self, revision: Revision) -> Template:
        known = self._templates.get(revision.id)
        if known is None:
            known = self._templates[revision.id] = template(revision, self.source)
        return known

    async def _publish(self, body: bytes, events: int, counts: Counter[str]) -> None:
        """POST one batch; retry while the broker is unreachable or busy, drop it (counted) if it refuses it."""
        headers = {"content-type": BATCH_CONTENT_TYPE, **self.credentials}
        for attempt in range(len(RETRY_S) + 1):
            try:
                answer = await self._client.send("POST", self.broker_url, body, headers=headers, timeout=10.0)
            except Unavailable as exc:
                status, reason = 503, str(exc)
            else:
                status, reason = answer.status, answer.data[:300].decode("utf-8", "replace")
            if status < 300:
                self.published.update(counts)
                return
            if not retryable_status(status):
                break
            if attempt < len(RETRY_S):
                log.debug("inference log: broker %s answered %s (%s); retrying", self.broker_url, status, reason)
                await asyncio.sleep(RETRY_S[attempt])
        why = UNAVAILABLE if retryable_status(status) else REFUSED
        log.warning(
            "inference log: broker %s did not take %d event(s) (%s): %s %s", self.broker_url, events, why, status,
            reason,
        )  # fmt: skip
        for revision, n in counts.items():
            self.dropped[(revision, why)] += n

    # -- metrics ------------------------------------------------------------------------
    def families(self) -> list[Metric]:
        """The logger's counters and queue depth, as the gateway's ``/metrics`` shows them."""
        published = Tally("knflow_inference_log_published_total", "inference events the broker took", ("revision",))
        dropped = Tally("knflow_inference_log_dropped_total", "inference events dropped", ("revision", "reason"))
        encode = Tally("knflow_inference_log_encode_seconds_total", "CPU seconds encoding inference events", ())
        for revision, n in self.published.items():
            published.inc(revision, amount=n)
        for (revision, why), n in self.dropped.items():
            dropped.inc(revision, why, amount=n)
        encode.inc(amount=self.encode_s)
        waiting = {(): len(self._queue)}
        queued = gauge("knflow_inference_log_queued", "inference events waiting to be published", (), waiting)
        return [published.family(), dropped.family(), encode.family(), queued]

    def metrics_text(self) -> str:
        """The logger's metrics in Prometheus text format."""
        return render(registry_of(self.families)).decode()
