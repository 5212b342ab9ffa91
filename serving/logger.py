"""The inference logger: sampled requests and their responses as CloudEvents in KServe's inference-logger format,
published to the broker by one task in batches, off the request path (a full queue drops and counts).

Each logged request is two events, ``org.kubeflow.serving.inference.request`` and ``.response``, sharing one
``id`` (the request's ``Ce-Id`` header, else a new UUID) and carrying the extensions KServe's logger sets
(``inferenceservicename``, ``namespace``, ``component``, ``endpoint``, ``metadata``) plus knflow's ``modelversion``
and ``revision`` and the deploying run's extensions (``runid``, ``pipeline``), so that run's pipeline can take them.
The data is the body as it came and went, under its content type: the logger never decodes a request.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from eventing.bindings import BATCH_CONTENT_TYPE
from eventing.events import SPECVERSION, TRACEPARENT, child_traceparent
from eventing.http1 import Http1Pool

if TYPE_CHECKING:
    from serving.revisions import Revision

log = logging.getLogger(__name__)

INFERENCE_REQUEST = "org.kubeflow.serving.inference.request"
INFERENCE_RESPONSE = "org.kubeflow.serving.inference.response"
ALL, REQUEST, RESPONSE = "all", "request", "response"  # KServe's logger modes
NAMESPACE = "default"  # knflow has no namespaces yet: KServe's default one
COMPONENT = "predictor"
#: Request headers kept in the ``metadata`` extension (KServe's ``metadataHeaders``): what a reader needs to split
#: a body in the binary tensor extension.
BINARY_HEADER = "inference-header-content-length"
METADATA_HEADERS = (BINARY_HEADER,)
#: The attributes the logger sets on every event itself (a deploy's extensions may not name them).
LOGGER_ATTRIBUTES = frozenset(
    {"specversion", "id", "source", "type", "time", "datacontenttype", "subject", "dataschema", "data", "data_base64"}
    | {"inferenceservicename", "namespace", "component", "endpoint", "metadata", "modelversion", "revision"}
    | {TRACEPARENT}
)
QUEUE_FULL, TOO_LARGE, REFUSED, UNAVAILABLE = "queue_full", "too_large", "refused", "unavailable"
BATCH_BYTES = 1024 * 1024  # per POST, and never above the broker's limit
BATCH_EVENTS = 512
ENVELOPE_BYTES = 2048  # what an event's attributes add to its body, at most
WARN_EVERY_S = 10.0
RETRY_S = (0.2, 0.5, 1.0, 2.0, 5.0)


@dataclass(frozen=True)
class LogSpec:
    """What a revision logs: which messages (KServe's ``mode``), the share of requests, the deploying run's
    extensions (``runid``, ``pipeline``) the events carry."""

    mode: str = ALL
    sample_rate: float = 1.0
    extensions: dict[str, str] = field(default_factory=dict)


class _Entry(NamedTuple):
    revision: Revision
    when: float
    headers: Mapping[str, str]
    body: bytes  # empty when the revision logs responses only
    response: bytes  # empty when it logs requests only
    response_type: str


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
    ):
        self.broker_url = broker_url
        self.queue_limit, self.queue_bytes = queue_limit, queue_bytes
        self.max_event_bytes = max_event_bytes
        self.batch_bytes = min(BATCH_BYTES, max_event_bytes)
        self.endpoint_of, self.sample = endpoint_of, sample
        self.source = "/knflow/serving"
        self.published: Counter[str] = Counter()  # events, per revision
        self.dropped: Counter[tuple[str, str]] = Counter()  # events, per (revision, reason)
        self._queue: deque[_Entry] = deque()
        self._queued_bytes = 0
        self._wake = asyncio.Event()
        self._pool = Http1Pool()
        self._templates: dict[str, tuple[dict[str, Any], int]] = {}
        self._task: asyncio.Task | None = None
        self._sending = False
        self._warned_at, self._unreported = 0.0, 0
        self._ids = _Ids()
        self._clock = _Clock()

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
        if size + 2 * ENVELOPE_BYTES > self.max_event_bytes:  # the pair must fit one batch the broker takes
            self._drop(revision.id, TOO_LARGE, (spec.mode == ALL) + 1)
        elif len(self._queue) >= self.queue_limit or self._queued_bytes + size > self.queue_bytes:
            self._drop(revision.id, QUEUE_FULL, (spec.mode == ALL) + 1)
        else:  # everything else (ids, times, traces, encoding) is the publisher's work
            self._queue.append(_Entry(revision, time.time(), headers, body, response, response_type))
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
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._pool.close()

    async def _drained(self) -> None:
        while self._queue or self._sending:
            await asyncio.sleep(0.01)

    async def run(self) -> None:
        """Take what is queued, in batches, and publish each; one POST in flight (the broker commits it whole)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                self._sending = True
                try:
                    await self._publish(*self._take())
                except Exception:  # a bug here must not end logging for the gateway's life
                    log.exception("inference log: publishing a batch failed")
                finally:
                    self._sending = False

    def _take(self) -> tuple[bytes, int, Counter[str]]:
        """A batch off the queue (up to ``batch_bytes`` / ``BATCH_EVENTS``): its JSON body, its event count, and
        the events per revision."""
        events: list[dict[str, Any]] = []
        counts: Counter[str] = Counter()
        size = 0
        while self._queue and len(events) < BATCH_EVENTS:
            entry = self._queue[0]
            template, envelope = self._template(entry.revision)
            grown = size + len(entry.body) + len(entry.response) + 2 * envelope
            if events and grown > self.batch_bytes:
                break
            self._queue.popleft()
            self._queued_bytes -= len(entry.body) + len(entry.response)
            counts[entry.revision.id] += self._add_events(events, template, entry)
            size = grown
        return orjson.dumps(events), len(events), counts

    def _add_events(self, events: list[dict[str, Any]], template: dict[str, Any], entry: _Entry) -> int:
        """Append an entry's request and response events (their bodies embedded as they are); how many."""
        headers = entry.headers
        common = {
            **template,
            "id": headers.get("ce-id") or self._ids.next(),
            "time": self._clock.rfc3339(entry.when),
            "endpoint": self.endpoint_of(entry.revision),
            TRACEPARENT: self._ids.traceparent(headers.get(TRACEPARENT)),
            "metadata": _metadata(headers),
        }
        before = len(events)
        if entry.body:
            events.append({**common, "type": INFERENCE_REQUEST, **_data(_request_type(headers), entry.body)})
        if entry.response:
            events.append({**common, "type": INFERENCE_RESPONSE, **_data(entry.response_type, entry.response)})
        return len(events) - before

    def _template(self, revision: Revision) -> tuple[dict[str, Any], int]:
        """The attributes every event of a revision carries, and a bound on an event's size besides its body."""
        known = self._templates.get(revision.id)
        if known is None:
            assert revision.logger is not None
            template = {
                **revision.logger.extensions,
                "specversion": SPECVERSION,
                "source": f"{self.source}/v2/models/{revision.model}",
                "inferenceservicename": revision.model,
                "namespace": NAMESPACE,
                "component": COMPONENT,
                "modelversion": str(revision.version),
                "revision": revision.id,
            }
            known = self._templates[revision.id] = (template, len(orjson.dumps(template)) + ENVELOPE_BYTES)
        return known

    async def _publish(self, body: bytes, events: int, counts: Counter[str]) -> None:
        """POST one batch; retry while the broker is unreachable or busy, drop it (counted) if it refuses it."""
        headers = {"content-type": BATCH_CONTENT_TYPE}
        for attempt in range(len(RETRY_S) + 1):
            try:
                answer = await self._pool.post(self.broker_url, headers, body, timeout=10.0)
            except (OSError, TimeoutError) as exc:
                status, reason = 503, str(exc) or type(exc).__name__
            else:
                status, reason = answer.status, answer.body[:300].decode("utf-8", "replace")
            if status < 300:
                self.published.update(counts)
                return
            if status < 500 and status != 429:
                break
            if attempt < len(RETRY_S):
                log.debug("inference log: broker %s answered %s (%s); retrying", self.broker_url, status, reason)
                await asyncio.sleep(RETRY_S[attempt])
        why = REFUSED if status < 500 and status != 429 else UNAVAILABLE
        log.warning(
            "inference log: broker %s did not take %d event(s) (%s): %s %s", self.broker_url, events, why, status,
            reason,
        )  # fmt: skip
        for revision, n in counts.items():
            self.dropped[(revision, why)] += n

    # -- metrics ------------------------------------------------------------------------
    def metrics_text(self) -> str:
        """The logger's counters and queue depth in Prometheus text format."""
        out = ["# TYPE knflow_inference_log_published_total counter"]
        out += [
            f'knflow_inference_log_published_total{{revision="{r}"}} {n}' for r, n in sorted(self.published.items())
        ]
        out.append("# TYPE knflow_inference_log_dropped_total counter")
        out += [
            f'knflow_inference_log_dropped_total{{revision="{r}",reason="{why}"}} {n}'
            for (r, why), n in sorted(self.dropped.items())
        ]
        out.append("# TYPE knflow_inference_log_queued gauge")
        out.append(f"knflow_inference_log_queued {len(self._queue)}")
        return "\n".join(out) + "\n"


def _request_type(headers: Mapping[str, str]) -> str:
    """What an answered V2 request body is: JSON (whatever Content-Type the client sent: the gateway read it as
    JSON), unless it came in the binary tensor extension (``Inference-Header-Content-Length``), then as sent."""
    if BINARY_HEADER in headers:
        return headers.get("content-type") or "application/octet-stream"
    return "application/json"


def _metadata(headers: Mapping[str, str]) -> str:
    """KServe's ``metadata`` extension: the kept request headers as JSON (name -> [values])."""
    kept = {name: [headers[name]] for name in METADATA_HEADERS if name in headers}
    return orjson.dumps(kept).decode() if kept else "{}"


def _data(content_type: str, body: bytes) -> dict[str, Any]:
    """An event's content type and data: a JSON body embedded as it is (never parsed here), any other as base64."""
    if content_type.split(";", 1)[0].strip().lower() == "application/json":
        return {"datacontenttype": content_type, "data": orjson.Fragment(body)}
    return {"datacontenttype": content_type, "data_base64": base64.b64encode(body).decode()}


class _Ids:
    """Event ids and trace ids for the publisher, cheaply: UUID-shaped ids whose last 32 bits count (a new random
    prefix every 2**32 ids), and new traces cut from one block of random bytes at a time."""

    def __init__(self) -> None:
        self._prefix, self._count = "", 1 << 32
        self._random, self._at = "", 0

    def next(self) -> str:
        self._count += 1
        if self._count >= 1 << 32:
            self._prefix, self._count = str(uuid.uuid4())[:-8], 0
        return f"{self._prefix}{self._count:08x}"

    def traceparent(self, parent: str | None) -> str:
        """A child of the request's ``traceparent``, else a new trace."""
        if parent:
            return child_traceparent(parent)
        if self._at >= len(self._random):
            self._random, self._at = os.urandom(24 * 512).hex(), 0
        chunk = self._random[self._at : self._at + 48]
        self._at += 48
        return f"00-{chunk[:32]}-{chunk[32:]}-01"


class _Clock:
    """RFC 3339 times to the millisecond, each formatted once."""

    def __init__(self) -> None:
        self._ms, self._text = -1, ""

    def rfc3339(self, when: float) -> str:
        ms = int(when * 1000)
        if ms != self._ms:
            moment = datetime.fromtimestamp(ms / 1000, UTC)
            self._ms, self._text = ms, moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return self._text
