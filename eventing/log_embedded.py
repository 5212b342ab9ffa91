"""The embedded event log: an append-only SQLite WAL database on local disk with per-group committed offsets.

Durability: ``synchronous=FULL`` in WAL mode, so a commit is fsynced before ``append`` returns;
one writer thread group-commits every append (and offset commit) queued while the previous
transaction was syncing, which is where the throughput comes from. A transaction holding only offset
commits is not fsynced itself (``synchronous=NORMAL``): the next fsynced one syncs it with the WAL, a process
crash loses none of it, and what a power loss takes is redelivered (at-least-once), so appends never wait
behind an offset commit's fsync. A consumer group's state is
a watermark (every offset at or below it is done) plus the done offsets above it, so deliveries
that finish out of order (different partition keys run in parallel) are not repeated after a restart.
Events older than ``retention_hours`` are deleted and the WAL checkpointed periodically.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cloudevents.core.v1.event import CloudEvent

from eventing.bindings import to_json
from eventing.eventlog import Record
from eventing.events import partition_key, runid_of
from eventing.triggers import EARLIEST, LATEST
from eventing.wire import from_json
from infra.errors import InvalidRequest, Unavailable
from infra.settings import EventingSettings

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (offset INTEGER PRIMARY KEY, ts REAL NOT NULL, runid TEXT, type TEXT, body BLOB);
CREATE INDEX IF NOT EXISTS events_runid ON events(runid, offset);
CREATE TABLE IF NOT EXISTS groups (name TEXT PRIMARY KEY, watermark INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS acks (name TEXT, offset INTEGER, PRIMARY KEY (name, offset)) WITHOUT ROWID;
"""
COMMIT_DELAY_S = 0.02
TAIL_CACHE = 20_000


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


class _Writer(threading.Thread):
    """The one thread that writes: each loop takes everything queued and commits it in one transaction."""

    def __init__(self, conn: sqlite3.Connection, loop: asyncio.AbstractEventLoop, on_commit: Any):
        super().__init__(name="eventlog-writer", daemon=True)
        self.conn, self.loop, self.on_commit = conn, loop, on_commit
        self.jobs: queue.Queue = queue.Queue()
        self._synchronous = "FULL"

    def submit(self, job: Any, future: asyncio.Future | None = None) -> None:
        self.jobs.put((job, future))

    def run(self) -> None:
        while True:
            batch = [self.jobs.get()]
            while True:
                try:
                    batch.append(self.jobs.get_nowait())
                except queue.Empty:
                    break
            if any(job is None for job, _ in batch):
                self._commit([b for b in batch if b[0] is not None])
                return
            self._commit(batch)

    def _commit(self, batch: list[tuple[Any, asyncio.Future | None]]) -> None:
        results: list[Any] = []
        try:
            self._sync(all(isinstance(job, _OffsetCommit) for job, _ in batch))
            self.conn.execute("BEGIN IMMEDIATE")
            results = self._run(batch)
            self.conn.execute("COMMIT")
        except Exception as exc:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            log.exception("event log write failed")
            error = Unavailable(f"the embedded event log could not write: {exc}")
            for _, fut in batch:
                if fut is not None:
                    self.loop.call_soon_threadsafe(_set_exception, fut, error)
            return
        self.loop.call_soon_threadsafe(self.on_commit, batch, results)

    def _sync(self, offsets_only: bool) -> None:
        """fsync the next transaction unless it only commits offsets (see the module docstring)."""
        synchronous = "NORMAL" if offsets_only else "FULL"
        if synchronous != self._synchronous:
            self.conn.execute(f"PRAGMA synchronous={synchronous}")
            self._synchronous = synchronous

    def _run(self, batch: list[tuple[Any, asyncio.Future | None]]) -> list[Any]:
        """Every append of the batch in one ``executemany`` (offsets are consecutive under the write lock),
        then the other jobs; each job's result in batch order."""
        rows = [row for job, _ in batch if isinstance(job, _AppendJob) for row in job.rows]
        offset = 0
        if rows:
            self.conn.executemany(INSERT, rows)
            offset = self.conn.execute("SELECT last_insert_rowid()").fetchone()[0] - len(rows) + 1
        results: list[Any] = []
        for job, _ in batch:
            if isinstance(job, _AppendJob):
                results.append(_Appended((offset + i, partition_key(e), e) for i, (_, e) in enumerate(job.pairs())))
                offset += len(job.rows)
            else:
                results.append(job(self.conn))
        return results


INSERT = "INSERT INTO events (ts, runid, type, body) VALUES (?, ?, ?, ?)"


class _AppendJob:
    """Rows to insert for one ``append`` call; the writer inserts all of a batch's appends at once."""

    __slots__ = ("events", "rows")

    def __init__(self, rows: list[tuple[Any, ...]], events: Sequence[CloudEvent]):
        self.rows, self.events = rows, events

    def pairs(self) -> zip:
        return zip(self.rows, self.events, strict=True)


class _OffsetCommit:
    """A consumer group's offset commit: a transaction of these alone is not fsynced (see the module docstring)."""

    __slots__ = ("run",)

    def __init__(self, run: Any):
        self.run = run

    def __call__(self, conn: sqlite3.Connection) -> None:
        self.run(conn)


class _Appended(list):
    """The ``(offset, partition key, event)`` rows one append committed (kept in the tail cache)."""


def _set_exception(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


class EmbeddedEventLog:
    """``EventLog`` on SQLite under ``path`` (``events.db``)."""

    def __init__(self, path: Path, *, retention_hours: float = EventingSettings.retention_hours):
        self.path = Path(path)
        self.retention_s = retention_hours * 3600
        self._changed: asyncio.Event | None = None
        self._writer: _Writer | None = None
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="eventlog-reader")
        self._rconn: sqlite3.Connection | None = None
        self._retention_task: asyncio.Task | None = None
        self._tail: list[tuple[int, str | None, CloudEvent]] = []  # recent appends, so readers skip SQL + parsing
        self.end = 0  # the offset of the last event appended

    async def start(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        conn = _connect(self.path / "events.db")
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect on a new database: lets retention shrink it
        conn.executescript(SCHEMA)
        self.end = conn.execute("SELECT COALESCE(MAX(offset), 0) FROM events").fetchone()[0]
        self._rconn = _connect(self.path / "events.db")
        loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._writer = _Writer(conn, loop, self._committed)
        self._writer.start()
        self._retention_task = asyncio.create_task(self._retention_loop())

    def _committed(self, batch: list, results: list) -> None:
        """On the loop, in commit order: extend the tail cache, resolve the writers' futures, wake readers (only
        after an append: offset commits and retention passes are no news to them)."""
        appended = False
        for result in results:
            if isinstance(result, _Appended) and result:
                self._tail.extend(result)
                self.end = max(self.end, result[-1][0])
                appended = True
        if len(self._tail) > 2 * TAIL_CACHE:
            del self._tail[:TAIL_CACHE]
        for (_, fut), result in zip(batch, results, strict=True):
            if fut is not None and not fut.done():
                fut.set_result(result)
        if appended:
            assert self._changed is not None
            self._changed.set()
            self._changed = asyncio.Event()

    async def wait_for_append(self, timeout: float) -> None:
        assert self._changed is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):  # every trigger waits here per commit: no task per wait (wait_for)
                await self._changed.wait()

    async def write(self, job: Any) -> Any:
        """Run ``job(conn)`` (or insert an ``_AppendJob``) in the writer's next transaction; wait for its commit."""
        assert self._writer is not None
        fut = asyncio.get_running_loop().create_future()
        self._writer.submit(job, fut)
        return await fut

    def write_nowait(self, job: Any) -> None:
        assert self._writer is not None
        self._writer.submit(job)

    async def read(self, job: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._reader, job, self._rconn)

    async def append(self, events: Sequence[CloudEvent]) -> None:
        now = time.time()
        rows = [(now, runid_of(e), e.get_type(), to_json(e)) for e in events]
        await self.write(_AppendJob(rows, events))

    def cached(self, after: int, limit: int) -> list[tuple[int, str | None, CloudEvent]] | None:
        """Up to ``limit`` appended entries after offset ``after`` from the tail cache, or None if not cached."""
        tail = self._tail
        if not tail or tail[0][0] > after + 1:
            return None
        index = after + 1 - tail[0][0]
        if index >= len(tail):
            return [] if tail[-1][0] <= after else None
        if tail[index][0] != after + 1:
            return None  # offsets not contiguous here: read the database
        return tail[index : index + limit]

    def consumer(self, group: str, initial_offset: str = LATEST) -> EmbeddedConsumer:
        return EmbeddedConsumer(self, group, initial_offset)

    async def drop_group(self, group: str) -> None:
        def drop(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM groups WHERE name = ?", (group,))
            conn.execute("DELETE FROM acks WHERE name = ?", (group,))

        await self.write(drop)

    async def history(
        self, *, after: str | None, limit: int, runid: str | None = None, type: str | None = None
    ) -> tuple[list[tuple[str, CloudEvent]], str | None]:
        if after and not (after.isascii() and after.isdigit()):
            raise InvalidRequest(f"cursor {after!r} is not an offset (a whole number)")
        start = int(after) if after else 0
        sql = "SELECT offset, body FROM events WHERE offset > ?"
        args: list[int | str] = [start]
        if runid:
            sql, args = sql + " AND runid = ?", [*args, runid]
        if type:
            sql, args = sql + " AND type = ?", [*args, type]
        rows = await self.read(lambda c: c.execute(f"{sql} ORDER BY offset LIMIT ?", (*args, limit)).fetchall())
        events = [(str(offset), from_json(body)) for offset, body in rows]
        return events, (events[-1][0] if events else (after or "0"))

    async def close(self) -> None:
        if self._retention_task:
            self._retention_task.cancel()
        if self._writer:
            self._writer.submit(None)
            await asyncio.get_running_loop().run_in_executor(None, self._writer.join, 10)
        self._reader.shutdown(wait=True)

    async def compact(self, now: float | None = None) -> int:
        """Delete events older than the retention period and shrink the WAL; returns how many were deleted."""
        cutoff = (now or time.time()) - self.retention_s

        def delete(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM events WHERE ts < ?", (cutoff,)).rowcount

        deleted = await self.write(delete)
        if deleted:
            await self.read(lambda c: c.execute("PRAGMA incremental_vacuum").fetchall())
        await self.read(lambda c: c.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall())
        if deleted:
            log.info("retention deleted %d events older than %.1f h", deleted, self.retention_s / 3600)
        return deleted

    async def _retention_loop(self) -> None:
        while True:
            try:
                await self.compact()
            except Exception:
                log.exception("retention pass failed")
            await asyncio.sleep(min(max(self.retention_s / 10, 1.0), 600.0))


class EmbeddedConsumer:
    """A consumer group on the embedded log (see the module docstring for its committed state)."""

    def __init__(self, log_: EmbeddedEventLog, group: str, initial_offset: str = LATEST):
        self.log, self.group, self.initial_offset = log_, group, initial_offset
        self._position: int | None = None  # the highest offset handed out
        self._watermark = 0
        self._preacked: set[int] = set()
        self._inflight: deque[int] = deque()
        self._done: set[int] = set()
        self._flush: asyncio.TimerHandle | None = None

    async def pin(self) -> None:
        if self._position is None:
            await self._load()

    async def ready(self) -> None:
        await self.pin()  # nothing to join: pinned is positioned

    async def _load(self) -> None:
        group = self.group
        start = (
            "COALESCE(MIN(offset) - 1, MAX(offset), 0)"
            if self.initial_offset == EARLIEST
            else "COALESCE(MAX(offset), 0)"
        )

        def load(conn: sqlite3.Connection) -> tuple[int, list[int]]:
            row = conn.execute("SELECT watermark FROM groups WHERE name = ?", (group,)).fetchone()
            if row is None:  # a new group starts at the end of the log (latest) or before its first event (earliest)
                tail = conn.execute(f"SELECT {start} FROM events").fetchone()[0]
                conn.execute("INSERT INTO groups (name, watermark) VALUES (?, ?)", (group, tail))
                return tail, []
            acks = [r[0] for r in conn.execute("SELECT offset FROM acks WHERE name = ?", (group,))]
            return row[0], acks

        self._watermark, acks = await self.log.write(load)
        self._preacked = set(acks)
        self._position = self._watermark

    async def fetch(self, max_records: int, timeout: float) -> list[Record]:
        await self.ready()
        deadline = time.monotonic() + timeout
        while True:
            position = self._position
            assert position is not None, "ready() sets the position"
            cached = self.log.cached(position, max_records)
            if cached:
                return self._take(cached)
            if cached is None:  # not in the tail cache (older, or appended before this process): read it
                rows = await self.log.read(
                    lambda c, position=position: c.execute(
                        "SELECT offset, body FROM events WHERE offset > ? ORDER BY offset LIMIT ?",
                        (position, max_records),
                    ).fetchall()
                )
                if rows:
                    events = [(offset, from_json(body)) for offset, body in rows]
                    return self._take([(offset, partition_key(event), event) for offset, event in events])
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            await self.log.wait_for_append(left)

    def _take(self, entries: list[tuple[int, str | None, CloudEvent]]) -> list[Record]:
        """Hand out ``(offset, partition key, event)`` entries, skipping pre-acked offsets."""
        records = []
        for offset, key, event in entries:
            self._inflight.append(offset)
            if offset in self._preacked:
                self._preacked.discard(offset)
                self._done.add(offset)
                continue
            records.append(Record((0, offset), key, event))
        self._position = entries[-1][0]
        self._advance()
        return records

    def ack(self, record: Record) -> None:
        self._done.add(record.position[1])
        self._advance()

    def lag(self) -> int:
        if self._position is None:
            return 0
        return max(0, self.log.end - self._watermark - len(self._done) - len(self._preacked))

    def _advance(self) -> None:
        while self._inflight and self._inflight[0] in self._done:
            offset = self._inflight.popleft()
            self._done.discard(offset)
            self._watermark = offset
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(COMMIT_DELAY_S, self._commit)

    def _commit(self) -> None:
        self._flush = None
        group, watermark, done = self.group, self._watermark, sorted(self._done | self._preacked)

        def commit(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE groups SET watermark = ? WHERE name = ?", (watermark, group))
            conn.execute("DELETE FROM acks WHERE name = ?", (group,))
            conn.executemany("INSERT INTO acks (name, offset) VALUES (?, ?)", [(group, o) for o in done])

        self.log.write_nowait(_OffsetCommit(commit))

    async def close(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
        if self._position is not None:
            self._commit()
