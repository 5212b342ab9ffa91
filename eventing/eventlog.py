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
    key: str | None
    event: CloudEvent


class Consumer(Protocol):
    """A consumer group's reader: records come in log order; ``ack`` marks one done (commits are batched)."""

    async def ready(self) -> None:
        """Join the group and pin its starting offsets (a new group starts at the current end of the log)."""
        ...

    async def fetch(self, max_records: int, timeout: float) -> list[Record]:
        """Up to ``max_records`` records not yet handed out; [] after ``timeout`` seconds with none."""
        ...

    def ack(self, record: Record) -> None:
        """Mark a record delivered (or dead-lettered); its offset is committed once all before it are."""
        ...

    async def close(self) -> None:
        """Commit what is done and stop reading."""
        ...


class EventLog(Protocol):
    """A durable, ordered log of CloudEvents."""

    async def start(self) -> None:
        """Open the log (create storage, connect)."""
        ...

    async def append(self, events: Sequence[CloudEvent]) -> None:
        """Store events durably; when this returns they survive a crash of this process."""
        ...

    def consumer(self, group: str) -> Consumer:
        """The reader of consumer group ``group`` (a new group starts at the end of the log)."""
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

    return EmbeddedEventLog(settings.broker.path, retention_hours=settings.eventing.retention_hours)  # type: ignore[arg-type]
