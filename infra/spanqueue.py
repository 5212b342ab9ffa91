"""The way finished spans leave a traced process: a bounded queue the hot path appends records to, and a thread that
hands them in batches (``marshal``, length-prefixed) to the exporter process ``infra.spanexport`` over a pipe.

The hot path pays one ``deque.append``; the thread wakes when a batch is full or every ``OTEL_BSP_SCHEDULE_DELAY``
ms. When the exporter falls behind (the pipe is full) the queue reaches ``OTEL_BSP_MAX_QUEUE_SIZE`` and further spans
are dropped and counted, never waited for. The exporter process is started at the first batch, so a process that
records no span starts none; it exits when the pipe closes, after exporting what it was sent.
"""

from __future__ import annotations

import collections
import logging
import marshal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import IO, Any

log = logging.getLogger(__name__)

HEADER = struct.Struct("<I")  # the length of each marshalled batch
MARSHAL_VERSION = 4
RESPAWN_AFTER_S = 5.0  # an exporter process that died is started again at most this often


def _setting(environ: Mapping[str, str], name: str, default: int) -> int:
    try:
        value = int(environ.get(name, "") or default)
    except ValueError:
        log.warning("tracing: %s is not an integer, using %d", name, default)
        return default
    return value if value > 0 else default


class SpanQueue:
    """Span records from any thread to the exporter process: ``put`` never blocks, ``close`` flushes and waits."""

    def __init__(self, service: str, environ: Mapping[str, str]) -> None:
        self.service, self.environ = service, dict(environ)
        self.max_queue = _setting(environ, "OTEL_BSP_MAX_QUEUE_SIZE", 2048)
        self.batch = min(_setting(environ, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512), self.max_queue)
        self.delay_s = _setting(environ, "OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000
        self.timeout_s = _setting(environ, "OTEL_EXPORTER_OTLP_TIMEOUT", 10)
        self.records: collections.deque[tuple[Any, ...]] = collections.deque()
        self.queued = self.dropped = 0  # counted by the hot path
        self.lost = 0  # counted by the thread (no exporter process to take them)
        self._wake = threading.Event()
        self._closing = False
        self._process: subprocess.Popen[bytes] | None = None
        self._spawned_at = -RESPAWN_AFTER_S
        self._thread = threading.Thread(target=self._run, name="knflow-spans", daemon=True)
        self._thread.start()

    def put(self, record: tuple[Any, ...]) -> None:
        """Queue one finished span's record (the hot path: an append, a length test)."""
        records = self.records
        if len(records) >= self.max_queue:
            self.dropped += 1
            return
        records.append(record)
        self.queued += 1
        if len(records) >= self.batch and not self._wake.is_set():
            self._wake.set()

    def close(self) -> None:
        """Send what is queued, close the pipe and wait for the exporter process to export it and exit."""
        self._closing = True
        self._wake.set()
        self._thread.join(self.timeout_s + 5)
        if self._process is not None:
            try:
                self._process.wait(self.timeout_s + 5)
            except subprocess.TimeoutExpired:
                log.warning("tracing: the span exporter did not finish in time; stopping it")
                self._process.kill()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.delay_s)
            self._wake.clear()
            closing = self._closing
            records, take = self.records, self.records.popleft
            while records:
                self._send([take() for _ in range(min(len(records), self.batch))])
            if closing:
                if self._process is not None and self._process.stdin is not None:
                    self._process.stdin.close()
                return

    def _send(self, batch: list[tuple[Any, ...]]) -> None:
        pipe = self._pipe()
        if pipe is None:
            self.lost += len(batch)
            return
        payload = marshal.dumps(batch, MARSHAL_VERSION)
        try:
            pipe.write(HEADER.pack(len(payload)) + payload)
            pipe.flush()
        except (BrokenPipeError, OSError) as exc:
            log.warning("tracing: the span exporter went away (%s); %d spans dropped", exc, len(batch))
            self.lost += len(batch)
            self._process = None

    def _pipe(self) -> IO[bytes] | None:
        """The exporter process's stdin, starting it when there is none (not more often than ``RESPAWN_AFTER_S``)."""
        if self._process is not None and self._process.poll() is None:
            return self._process.stdin
        if time.monotonic() - self._spawned_at < RESPAWN_AFTER_S:
            return None
        self._spawned_at = time.monotonic()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "infra.spanexport", self.service], stdin=subprocess.PIPE, env=self.environ
            )
        except OSError as exc:
            log.warning("tracing: cannot start the span exporter: %s", exc)
            self._process = None
            return None
        return self._process.stdin


def queue_families(queue: SpanQueue) -> list[Any]:
    """``queue``'s counters as Prometheus families."""
    from prometheus_client.core import CounterMetricFamily  # at the first scrape: a process may never be scraped

    queued = CounterMetricFamily("knflow_trace_spans_queued", "finished spans queued for export")
    queued.add_metric([], queue.queued)
    dropped = CounterMetricFamily(
        "knflow_trace_spans_dropped", "spans dropped because the exporter fell behind (queue full, exporter gone)"
    )
    dropped.add_metric([], queue.dropped + queue.lost)
    return [queued, dropped]


__all__ = ["HEADER", "SpanQueue", "queue_families"]
