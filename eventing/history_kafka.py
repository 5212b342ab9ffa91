"""Event history over a Kafka topic for watchers: a group-less reader from a per-partition cursor (dev scale).

A cursor is ``"P:O,P:O"``: for each partition, the offset to read from next.
"""

from __future__ import annotations

import asyncio
import heapq

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition
from cloudevents.core.v1.event import CloudEvent

from eventing.events import InvalidEvent
from eventing.wire import from_kafka
from infra.errors import InvalidRequest, Unavailable


def parse_cursor(cursor: str | None) -> dict[int, int]:
    """``{partition: next offset}`` of a cursor."""
    if not cursor:
        return {}
    try:
        pairs = [part.split(":") for part in cursor.split(",") if part]
        if not all(len(pair) == 2 and all(n.isascii() and n.isdigit() for n in pair) for pair in pairs):
            raise ValueError(cursor)
        return {int(p): int(o) for p, o in pairs}
    except ValueError:
        raise InvalidRequest(f"cursor {cursor!r} is not of the form P:O,P:O (whole numbers)") from None


def format_cursor(positions: dict[int, int]) -> str:
    return ",".join(f"{p}:{o}" for p, o in sorted(positions.items()))


def _header(message, name: str) -> str | None:
    for key, value in message.headers or []:
        if key == name:
            return value.decode("utf-8", "replace")
    return None


class HistoryReader:
    """Reads the topic without a group for ``GET /events``; one client, reused, one read at a time."""

    def __init__(self, servers: str, partitions: list[TopicPartition]):
        self.servers, self.partitions = servers, partitions
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def read(
        self, after: str | None, limit: int, runid: str | None, type: str | None
    ) -> tuple[list[tuple[str, CloudEvent]], str]:
        """Up to ``limit`` matching events after ``after``, oldest first, and the cursor after them."""
        start = parse_cursor(after)
        async with self._lock:
            try:
                consumer = await self._open()
                ends = await end_offsets(consumer, self.partitions)  # fetches only while it has no high watermark
                for tp in self.partitions:
                    consumer.seek(tp, start.get(tp.partition, 0))
                scanned = await _scan(consumer, ends)
            except (KafkaError, OSError) as exc:
                raise Unavailable(f"Kafka history could not be read: {type_name(exc)}: {exc}") from None
        return _select(scanned, start, limit, runid, type, ends)

    async def _open(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.servers, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=10
            )
            await consumer.start()
            consumer.assign(self.partitions)
            self._consumer = consumer
        return self._consumer

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


def settled_ends(consumer: AIOKafkaConsumer, listed: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
    """Each partition's end: the listed one, or the high watermark of the consumer's last fetch when that is past it.

    tansu answers ListOffsets(latest) with its last record batch's base offset + 1, short of the end when that batch
    holds several records (aiokafka batches concurrent appends); a fetch response's high watermark is right, and
    never past the end however old it is.
    """
    return {tp: max(end, consumer.highwater(tp) or 0) for tp, end in listed.items()}


async def end_offsets(consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
    """Where each of ``partitions`` (assigned to ``consumer``, whose position it moves) ends: listed, then settled by
    a fetch from there (see ``settled_ends``)."""
    listed = await consumer.end_offsets(partitions)
    for tp, end in listed.items():
        consumer.seek(tp, end)
    for _ in range(100):  # a fetch answers within the consumer's fetch_max_wait_ms
        if all(consumer.highwater(tp) is not None for tp in partitions):
            break
        await consumer.getmany(*partitions, timeout_ms=50, max_records=1)
    return settled_ends(consumer, listed)


def type_name(exc: BaseException) -> str:
    return type(exc).__name__


async def _scan(consumer: AIOKafkaConsumer, ends: dict) -> list:
    """The records up to ``ends``: each partition's in offset order, partitions interleaved by timestamp.

    A partition's records are never reordered: record timestamps need not grow with offsets (several
    producers, client clocks), and a page cut after a later-offset record would move that partition's
    cursor past an earlier one that was not returned yet, so a watcher would never see it.
    """
    scanned: dict[int, list] = {tp.partition: [] for tp in ends}
    remaining = {tp for tp, end in ends.items() if await consumer.position(tp) < end}
    polls = 0
    while remaining and polls < 200:
        polls += 1
        batches = await consumer.getmany(*remaining, timeout_ms=200, max_records=2000)
        for tp, messages in batches.items():
            ends[tp] = max(ends[tp], consumer.highwater(tp) or 0)  # see settled_ends
            scanned[tp.partition] += [m for m in messages if m.offset < ends[tp]]
            if await consumer.position(tp) >= ends[tp]:
                remaining.discard(tp)
    # heapq.merge takes each partition's records in their own order, whatever their timestamps
    return list(heapq.merge(*scanned.values(), key=lambda m: m.timestamp))


def _select(scanned: list, start: dict[int, int], limit: int, runid, type, ends) -> tuple[list, str]:
    positions = dict(start)
    for tp, _end in ends.items():
        positions.setdefault(tp.partition, 0)
    out: list[tuple[str, CloudEvent]] = []
    for message in scanned:
        if len(out) >= limit:
            break
        positions[message.partition] = message.offset + 1
        if runid and _header(message, "ce_runid") != runid:
            continue
        if type and _header(message, "ce_type") != type:
            continue
        try:
            event = from_kafka(message.headers or [], message.key, message.value)
        except InvalidEvent:
            continue
        out.append((format_cursor(positions), event))
    return out, format_cursor(positions)
