"""The event log interface the broker sits on: durable append, consumer groups with committed offsets, history.

Two backends, chosen by the scheme of the ``broker`` setting (``open_event_log``):
``embedded://PATH`` (``eventing.log_embedded``: SQLite WAL on local disk) and
``kafka://HOST:PORT`` (``eventing.log_kafka``: one topic, a consumer group per trigger).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cloudevents.core.v1.event import CloudEvent

from infra.settings import Settings


@dataclass(frozen=True)
class Record:
    """One event read from the log by a consumer; ``position`` identifies it for ``Consumer.ack``."""

    position: tuple[int, int]  # (partition, offset); the embedded log has one partition, 0
    key: str | None  # the partition key (``partitionkey`` extension, else ``runid``): delivery is ordered per key
    event: CloudEvent


class Consumer(Protocol):
    """A consumer group's reader: records come in log order per key; ``ack`` marks one done (commits are batched).

    Guarantees: after ``pin`` returns, every event appended later is delivered to this group (at least
    once), however long ``ready`` takes; records of one key come in append order.
    """

    async def pin(self) -> None:
        """Fix where the group starts, fast and before any join: a group with no committed position gets one
        now (the end of the log for ``latest``, its beginning for ``earliest``); a known group keeps its own."""
        ...

    async def ready(self) -> None:
        """Join the group and position it (pins first if that was not done); may take seconds on Kafka."""
        ...

    async def fetch(self, max_records: int, timeout: float) -> list[Record]:
        """Up to ``max_records`` records not yet handed out; [] after ``timeout`` seconds with none."""
        ...

    def ack(self, record: Record) -> None:
        """Mark a record delivered (or dead-lettered); its offset is committed once all before it are."""
        ...

    def lag(self) -> int:
        """Events in the log this group has not acked yet (as of its last read on Kafka); 0 before it is pinned."""
        ...

    async def close(self) -> None:
        """Commit what is done and stop reading."""
        ...


class EventLog(Protocol):
    """A durable, ordered log of CloudEvents.

    Guarantees, proven on every backend by ``tests/eventing/test_eventlog_contract.py``: an event reads back as it was
    appended; events of one partition key come in append order (no order is promised between keys); ``history``
    pages by cursor giving each event once, and refuses a cursor it did not give with ``InvalidRequest``.
    """

    async def start(self) -> None:
        """Open the log (create storage, connect)."""
        ...

    async def append(self, events: Sequence[CloudEvent]) -> None:
        """Store events durably; when this returns they survive a crash of this process."""
        ...

    def consumer(self, group: str, initial_offset: str = "latest") -> Consumer:
        """The reader of consumer group ``group``; a new group starts at ``initial_offset`` (see ``Consumer.pin``)."""
        ...

    async def drop_group(self, group: str) -> None:
        """Forget a consumer group's offsets."""
        ...

    async def history(
        self, *, after: str | None, limit: int, runid: str | None = None, type: str | None = None
    ) -> tuple[list[tuple[str, CloudEvent]], str | None]:
        """Events after cursor ``after`` (optionally of one run / type) with their cursors, and the next cursor."""
        ...

    async def wait_for_append(self, timeout: float) -> None:
        """Return when something was appended, or after ``timeout`` seconds."""
        ...

    async def close(self) -> None:
        """Flush commits and release resources."""
        ...


def open_event_log(settings: Settings) -> EventLog:
    """The event log backend for ``settings.broker`` (``embedded`` or ``kafka``)."""
    if settings.broker.scheme == "kafka":
        from eventing.log_kafka import KafkaEventLog

        return KafkaEventLog(settings.broker)
    from eventing.log_embedded import EmbeddedEventLog

    assert settings.broker.path is not None, "an embedded broker location has its directory"
    return EmbeddedEventLog(settings.broker.path, retention_hours=settings.eventing.retention_hours)
