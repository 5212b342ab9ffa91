"""Event history over a Kafka topic for watchers: a group-less reader from a per-partition cursor (dev scale).

A cursor is ``"P:O,P:O"``: for each partition, the offset to read from next.
"""

from __future__ import annotations

from cloudevents.core.v1.event import CloudEvent
from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from eventing.bindings import from_kafka
from eventing.events import InvalidEvent
from infra.errors import InvalidRequest


def parse_cursor(cursor: str | None) -> dict[int, int]:
    """``{partition: next offset}`` of a cursor."""
    if not cursor:
        return {}
    try:
        return {int(p): int(o) for p, o in (part.split(":") for part in cursor.split(",") if part)}
    except ValueError:
        raise InvalidRequest(f"cursor {cursor!r} is not of the form P:O,P:O") from None


def format_cursor(positions: dict[int, int]) -> str:
    return ",".join(f"{p}:{o}" for p, o in sorted(positions.items()))


def _header(message, name: str) -> str | None:
    for key, value in message.headers or []:
        if key == name:
            return value.decode("utf-8", "replace")
    return None


def read_history(
    servers: list[str], topic: str, after: str | None, limit: int, runid: str | None, type: str | None
) -> tuple[list[tuple[str, CloudEvent]], str]:
    """Up to ``limit`` matching events after ``after``, oldest first, and the cursor after them."""
    start = parse_cursor(after)
    consumer = KafkaConsumer(bootstrap_servers=servers, group_id=None, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            return [], format_cursor(start) or (after or "")
        consumer.assign(partitions)
        ends = consumer.end_offsets(partitions)
        for tp in partitions:
            consumer.seek(tp, start.get(tp.partition, 0))
        scanned = _scan(consumer, partitions, ends)
    finally:
        consumer.close()
    return _select(scanned, start, limit, runid, type, ends)


def _scan(consumer: KafkaConsumer, partitions: list[TopicPartition], ends: dict) -> list:
    scanned = []
    remaining = {tp for tp in partitions if consumer.position(tp) < ends[tp]}
    polls = 0
    while remaining and polls < 200:
        polls += 1
        for tp, messages in consumer.poll(timeout_ms=200, max_records=2000).items():
            scanned += [m for m in messages if m.offset < ends[tp]]
            if consumer.position(tp) >= ends[tp]:
                remaining.discard(tp)
    scanned.sort(key=lambda m: (m.timestamp, m.partition, m.offset))
    return scanned


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
