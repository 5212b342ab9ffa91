"""The Kafka event log: one topic per broker keyed by partition key, one consumer group per trigger (aiokafka).

Records use the CloudEvents Kafka protocol binding (``eventing.wire.to_kafka``: binary mode, ``ce_``
headers, key = ``partitionkey`` else ``runid``), so a Knative Kafka Broker reads the same topic.
aiokafka runs on the broker's event loop (no client threads; its record codecs are C), which is
where the throughput comes from: ``bench/eventing/RESULTS.md`` compares it with kafka-python.
Offsets are committed only for records delivered or dead-lettered (the contiguous prefix per
partition), batched every ``COMMIT_DELAY_S``. A new group's starting offsets are committed when the
trigger is created (``pin``), before the group joins, as Knative's Kafka Broker does; so no event
accepted after the trigger was created is skipped however long the join takes. A consumer that has
caught up stops fetching until this process appends or ``IDLE_POLL_S`` passes (see ``FETCH``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import IllegalStateError, KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner, murmur2
from aiokafka.structs import OffsetAndMetadata, TopicPartition
from cloudevents.core.v1.event import CloudEvent

from eventing.eventlog import Record
from eventing.events import InvalidEvent
from eventing.triggers import EARLIEST, LATEST
from eventing.wire import from_kafka, to_kafka
from infra.errors import Unavailable
from infra.settings import BrokerLocation

log = logging.getLogger(__name__)

PARTITIONS = 4
ACK_TIMEOUT_S = 30.0
COMMIT_DELAY_S = 0.02
MAX_BATCH_BYTES = 512 * 1024
JOIN_TIMEOUT_S = 60.0
# heartbeats every second, a dead member noticed in 6 s; a delivery may hold the loop's reads for long
# (every lane busy), which is not a dead consumer, so the poll interval is generous
GROUP_TIMEOUTS = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "rebalance_timeout_ms": 3000,
    "max_poll_interval_ms": 3_600_000,
}
# A fetch that finds no data waits fetch_max_wait_ms at the broker, and tansu answers it only then, even when data
# arrives meanwhile: the wait bounds how late a reading consumer sees a new event. Each waiting fetch costs tansu and
# the client ~0.5 ms of CPU each (a shorter wait means more of them while events flow), so a consumer that has
# caught up stops fetching (its partitions paused) until this process appends or IDLE_POLL_S passes (appends by
# other processes are seen within that); an idle trigger then costs ~5x less CPU on both sides.
FETCH = {"fetch_max_wait_ms": 10}
IDLE_POLL_S = 0.25


class CachedPartitioner:
    """Kafka's default partitioning (murmur2 of the key, as the Java client and Knative's broker do), with the
    key's hash remembered: keys repeat (a run's events share one) and aiokafka's murmur2 is pure Python."""

    def __init__(self, size: int = 65536):
        self._hashes: dict[bytes, int] = {}
        self._size = size

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return DefaultPartitioner()(key, all_partitions, available)
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= self._size:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]


def _unavailable(what: str, exc: BaseException) -> Unavailable:
    return Unavailable(f"{what}: {type(exc).__name__}: {exc}")


class KafkaEventLog:
    """``EventLog`` on the topic ``location.topic`` of the Kafka cluster at ``location.servers``."""

    def __init__(self, location: BrokerLocation, *, partitions: int = PARTITIONS):
        self.servers, self.topic, self.partitions = ",".join(location.servers), location.topic, partitions
        self._producer: AIOKafkaProducer | None = None
        self._appended = asyncio.Event()
        self.appends = 0  # how many appends this process has made (a consumer compares it across a fetch)
        self._history: Any = None

    async def start(self) -> None:
        try:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.servers, client_id="knflow-broker")
            await admin.start()
            try:
                await admin.create_topics([NewTopic(self.topic, self.partitions, 1)])
            except TopicAlreadyExistsError:
                pass
            finally:
                await admin.close()
            producer = AIOKafkaProducer(
                bootstrap_servers=self.servers,
                acks="all",
                linger_ms=1,
                request_timeout_ms=int(ACK_TIMEOUT_S * 1000),
                # aiokafka sends one batch per partition at a time; the next one fills meanwhile, and a full one
                # holds every further append until the broker answers: room for a burst, not 16 KiB (~25 events)
                max_batch_size=MAX_BATCH_BYTES,
                partitioner=CachedPartitioner(),
            )
            self._producer = producer
            await producer.start()
            self.partitions = len(await producer.partitions_for(self.topic))
        except (KafkaError, OSError) as exc:
            await self.close()
            raise _unavailable(f"Kafka at {self.servers} is not reachable", exc) from None

    async def append(self, events: Sequence[CloudEvent]) -> None:
        assert self._producer is not None
        try:
            sent = []
            for event in events:
                key, headers, value = to_kafka(event)
                sent.append(await self._producer.send(self.topic, value, key=key, headers=headers))
            # the producer fails a send it could not deliver within its request_timeout_ms (ACK_TIMEOUT_S)
            await (sent[0] if len(sent) == 1 else asyncio.gather(*sent))
        except KafkaError as exc:
            raise _unavailable("Kafka did not store the event", exc) from None
        self.appends += 1
        self._appended.set()
        self._appended = asyncio.Event()

    def group_id(self, trigger: str) -> str:
        """The Kafka consumer group of a trigger: scoped by topic, so brokers sharing a cluster never collide."""
        return f"knflow.{self.topic}.{trigger}"

    def topic_partitions(self) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p) for p in range(self.partitions)]

    def consumer(self, group: str, initial_offset: str = LATEST) -> KafkaGroupConsumer:
        return KafkaGroupConsumer(self, self.group_id(group), initial_offset)

    async def drop_group(self, group: str) -> None:
        # aiokafka's admin client has no DeleteGroups; kafka-python's does (a rare call, in a thread)
        await asyncio.get_running_loop().run_in_executor(None, delete_group, self.servers, self.group_id(group))

    async def wait_for_append(self, timeout: float) -> None:
        # other processes may append too, so a watcher re-reads at least twice a second
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(timeout, 0.5)):
                await self._appended.wait()

    async def history(
        self, *, after: str | None, limit: int, runid: str | None = None, type: str | None = None
    ) -> tuple[list[tuple[str, CloudEvent]], str | None]:
        from eventing.history_kafka import HistoryReader

        if self._history is None:
            self._history = HistoryReader(self.servers, self.topic_partitions())
        return await self._history.read(after, limit, runid, type)

    async def close(self) -> None:
        if self._history is not None:
            await self._history.close()
        if self._producer is not None:
            with contextlib.suppress(KafkaError):
                await self._producer.stop()


def _polled(consumer: AIOKafkaConsumer) -> dict[TopicPartition, int | None]:
    """When each assigned partition's last fetch response came."""
    return {tp: consumer.last_poll_timestamp(tp) for tp in consumer.assignment()}


async def _caught_up(consumer: AIOKafkaConsumer, polled: dict[TopicPartition, int | None]) -> bool:
    """Whether a fetch response came for every partition since ``polled`` and none knows of a record past the
    consumer's position: a slow response still in flight (a loaded host) keeps the consumer fetching."""
    for tp in consumer.assignment():
        if tp not in consumer.assignment():
            return False  # revoked while this looked at another (a rebalance)
        at, end = consumer.last_poll_timestamp(tp), consumer.highwater(tp)
        if at is None or at == polled.get(tp) or end is None:
            return False
        try:
            if await consumer.position(tp) < end:
                return False
        except IllegalStateError:
            return False
    return True


def delete_group(servers: str, group: str) -> None:
    """Delete a consumer group and its offsets (a trigger created again under its name starts afresh)."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError as SyncKafkaError

    admin = None
    try:
        admin = KafkaAdminClient(bootstrap_servers=servers.split(","), client_id="knflow-broker")
        admin.delete_groups([group])
    except (SyncKafkaError, NotImplementedError, AttributeError, OSError) as exc:
        log.warning("could not delete consumer group %s: %s", group, exc)
    finally:
        if admin is not None:
            admin.close()


class KafkaGroupConsumer(ConsumerRebalanceListener):
    """One consumer group; tracks acks per partition and commits the delivered prefix."""

    def __init__(self, log_: KafkaEventLog, group: str, initial_offset: str = LATEST):
        self.log, self.group, self.initial_offset = log_, group, initial_offset
        self._consumer: AIOKafkaConsumer | None = None
        self._pinned = False
        self._inflight: dict[int, deque[int]] = {}
        self._done: dict[int, set[int]] = {}
        self._committable: dict[int, int] = {}
        self._next: dict[int, int] = {}  # per partition: the offset after the last record fetched
        self._flush: asyncio.TimerHandle | None = None
        self._committing: asyncio.Task | None = None

    # -- where the group starts ---------------------------------------------------
    async def pin(self) -> None:
        if self._pinned:
            return
        probe = AIOKafkaConsumer(
            bootstrap_servers=self.log.servers, group_id=self.group, enable_auto_commit=False, **FETCH
        )
        try:
            await probe.start()
            partitions = self.log.topic_partitions()
            probe.assign(partitions)
            missing = [tp for tp in partitions if await probe.committed(tp) is None]
            if missing:
                if self.initial_offset == EARLIEST:
                    offsets = await probe.beginning_offsets(missing)
                else:  # not probe.end_offsets: tansu lists the end short of a batch of several records
                    from eventing.history_kafka import end_offsets

                    offsets = await end_offsets(probe, missing)
                await probe.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
                log.info("consumer group %s starts at %s offsets %s", self.group, self.initial_offset, offsets)
        except (KafkaError, OSError) as exc:
            raise _unavailable(f"consumer group {self.group} could not record where it starts", exc) from None
        finally:
            await probe.stop()
        self._pinned = True

    async def ready(self) -> None:
        if self._consumer is not None:
            return
        await self.pin()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.log.servers,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset=self.initial_offset,
            **GROUP_TIMEOUTS,
            **FETCH,
        )
        try:
            await consumer.start()
            consumer.subscribe([self.log.topic], listener=self)
            await asyncio.wait_for(self._positioned(consumer), JOIN_TIMEOUT_S)
        except BaseException as exc:  # stopped while joining, too: leave the group cleanly
            await consumer.stop()
            if isinstance(exc, KafkaError | OSError | TimeoutError):
                raise _unavailable(f"consumer group {self.group} could not join", exc) from None
            raise
        self._consumer = consumer

    @staticmethod
    async def _positioned(consumer: AIOKafkaConsumer) -> None:
        while not consumer.assignment():
            await asyncio.sleep(0.02)  # aiokafka joins in the background and has no public wait for it
        for tp in consumer.assignment():
            await consumer.position(tp)

    # -- rebalance: a partition taken away is redelivered by its new owner from the committed offset ------
    async def on_partitions_revoked(self, revoked: Any) -> None:
        if self._consumer is not None:
            await self._commit_now()
        for tp in revoked:
            self._inflight.pop(tp.partition, None)
            self._next.pop(tp.partition, None)
            self._done.pop(tp.partition, None)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None

    # -- reading and acking ---------------------------------------------------------
    async def fetch(self, max_records: int, timeout: float) -> list[Record]:
        await self.ready()
        consumer = self._consumer
        assert consumer is not None
        appends, polled = self.log.appends, _polled(consumer)
        batches = await consumer.getmany(timeout_ms=FETCH["fetch_max_wait_ms"] * 2, max_records=max_records)
        if not any(batches.values()) and self.log.appends == appends and await _caught_up(consumer, polled):
            # no fetching (which costs both sides CPU while nothing comes) until this process appends or a poll
            partitions = consumer.assignment()
            consumer.pause(*partitions)
            try:
                await self.log.wait_for_append(min(timeout, IDLE_POLL_S))
            finally:
                consumer.resume(*(partitions & consumer.assignment()))
            batches = await consumer.getmany(timeout_ms=FETCH["fetch_max_wait_ms"] * 2, max_records=max_records)
        out = []
        for tp, messages in batches.items():
            inflight = self._inflight.setdefault(tp.partition, deque())
            if messages:
                self._next[tp.partition] = messages[-1].offset + 1
            for message in messages:
                inflight.append(message.offset)
                record = self._record(message)
                if record is None:
                    self._ack_position(message.partition, message.offset)  # a record it could not decode
                else:
                    out.append(record)
        return out

    def _record(self, message: Any) -> Record | None:
        try:
            event = from_kafka(message.headers or (), message.key, message.value)
        except InvalidEvent as exc:
            where = f"{message.partition}/{message.offset}"
            log.warning("skipping a record that is not a CloudEvent at %s: %s", where, exc)
            return None
        key = message.key.decode("utf-8", "replace") if message.key else None
        return Record((message.partition, message.offset), key, event)

    def ack(self, record: Record) -> None:
        self._ack_position(*record.position)

    def _ack_position(self, partition: int, offset: int) -> None:
        inflight = self._inflight.get(partition)
        if inflight is None:
            return  # the partition was revoked meanwhile: its new owner delivers it again
        done = self._done.setdefault(partition, set())
        done.add(offset)
        while inflight and inflight[0] in done:
            done.discard(inflight[0])
            self._committable[partition] = inflight.popleft() + 1
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(COMMIT_DELAY_S, self._schedule_commit)

    def lag(self) -> int:
        consumer = self._consumer
        if consumer is None:
            return 0
        behind = 0
        for tp in consumer.assignment():
            end, fetched = consumer.highwater(tp), self._next.get(tp.partition)
            if end is not None and fetched is not None:  # the end as of the last fetch response
                behind += max(0, end - fetched)
            behind += len(self._inflight.get(tp.partition, ())) - len(self._done.get(tp.partition, ()))
        return behind

    def _schedule_commit(self) -> None:
        self._flush = None
        if self._committing is None or self._committing.done():
            self._committing = asyncio.create_task(self._commit_now())
        else:  # one commit at a time: try again after this one
            self._flush = asyncio.get_running_loop().call_later(COMMIT_DELAY_S, self._schedule_commit)

    async def _commit_now(self) -> None:
        if not self._committable or self._consumer is None:
            return
        offsets = {TopicPartition(self.log.topic, p): OffsetAndMetadata(o, "") for p, o in self._committable.items()}
        self._committable = {}
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:
            log.warning("consumer group %s: commit failed (those events will be redelivered): %s", self.group, exc)

    async def close(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self._committing is not None:
            with contextlib.suppress(Exception):
                await self._committing
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        try:
            self._consumer = consumer
            await self._commit_now()
        finally:
            self._consumer = None
            with contextlib.suppress(KafkaError):
                await consumer.stop()
