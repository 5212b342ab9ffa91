"""The Kafka event log: one topic per broker keyed by ``runid``, one consumer group per trigger (kafka-python).

Records use the CloudEvents Kafka protocol binding (``eventing.bindings.to_kafka``: binary mode,
``ce_`` headers, key = runid), so a Knative Kafka Broker reads the same topic. kafka-python is
blocking, so the producer runs in a thread pool and each consumer group in its own thread; the
event loop only exchanges records and commit requests with them. Offsets are committed only
for records delivered or dead-lettered (the contiguous prefix per partition).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cloudevents.core.v1.event import CloudEvent
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata, TopicPartition

from eventing.bindings import from_kafka, to_kafka
from eventing.eventlog import Record
from eventing.events import InvalidEvent
from infra.errors import Unavailable
from infra.settings import BrokerLocation

log = logging.getLogger(__name__)

PARTITIONS = 4
ACK_TIMEOUT_S = 30.0
COMMIT_DELAY_S = 0.02
# a group joins in ~3 s with a low rebalance timeout (kafka-python's defaults take ~23 s)
GROUP_TIMEOUTS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "max_poll_interval_ms": 3000}
FETCH = {"fetch_max_wait_ms": 20}  # the broker answers a fetch within 20 ms even with little data: low latency


def _resolve(future: asyncio.Future, error: BaseException | None) -> None:
    if not future.done():
        future.set_result(error)


class KafkaEventLog:
    """``EventLog`` on the topic ``location.topic`` of the Kafka cluster at ``location.servers``."""

    def __init__(self, location: BrokerLocation, *, partitions: int = PARTITIONS):
        self.servers, self.topic, self.partitions = list(location.servers), location.topic, partitions
        self._pool = ThreadPoolExecutor(8, thread_name_prefix="kafka-producer")
        self._producer: KafkaProducer | None = None
        self._appended = asyncio.Event()

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._connect)

    def _connect(self) -> None:
        try:
            admin = KafkaAdminClient(bootstrap_servers=self.servers, client_id="knflow-broker")
            try:
                admin.create_topics([NewTopic(self.topic, self.partitions, 1)])
            except TopicAlreadyExistsError:
                pass
            finally:
                admin.close()
            self._producer = KafkaProducer(bootstrap_servers=self.servers, acks="all", linger_ms=1)
        except KafkaError as exc:
            raise Unavailable(f"Kafka at {','.join(self.servers)} is not reachable: {exc}") from None

    async def append(self, events: Sequence[CloudEvent]) -> None:
        loop = asyncio.get_running_loop()
        # send() only queues (in a thread: it may block on metadata); the acks are awaited on the loop,
        # so no thread waits out a broker round trip and appends from many requests batch together
        sent = await loop.run_in_executor(self._pool, self._send, list(events))
        waits = []
        for record in sent:
            done = loop.create_future()
            record.add_callback(lambda _, done=done: loop.call_soon_threadsafe(_resolve, done, None))
            record.add_errback(lambda exc, done=done: loop.call_soon_threadsafe(_resolve, done, exc))
            waits.append(done)
        try:
            errors = await asyncio.wait_for(asyncio.gather(*waits), ACK_TIMEOUT_S)
        except TimeoutError:
            raise Unavailable(f"Kafka did not acknowledge the event within {ACK_TIMEOUT_S:g}s") from None
        for error in errors:
            if error is not None:
                raise Unavailable(f"Kafka did not store the event: {error}")
        self._appended.set()
        self._appended = asyncio.Event()

    def _send(self, events: list[CloudEvent]) -> list[Any]:
        assert self._producer is not None
        try:
            out = []
            for event in events:
                key, headers, value = to_kafka(event)
                out.append(self._producer.send(self.topic, key=key, value=value, headers=headers))
            return out
        except KafkaError as exc:
            raise Unavailable(f"Kafka did not take the event: {exc}") from None

    def group_id(self, trigger: str) -> str:
        """The Kafka consumer group of a trigger: scoped by topic, so brokers sharing a cluster never collide."""
        return f"knflow.{self.topic}.{trigger}"

    def consumer(self, group: str) -> KafkaGroupConsumer:
        return KafkaGroupConsumer(self, self.group_id(group))

    async def drop_group(self, group: str) -> None:
        def drop() -> None:
            admin = KafkaAdminClient(bootstrap_servers=self.servers, client_id="knflow-broker")
            try:
                admin.delete_groups([self.group_id(group)])
            except (KafkaError, NotImplementedError, AttributeError) as exc:
                log.warning("could not delete consumer group %s: %s", group, exc)
            finally:
                admin.close()

        await asyncio.get_running_loop().run_in_executor(self._pool, drop)

    async def wait_for_append(self, timeout: float) -> None:
        # other processes may append too, so a watcher re-reads at least twice a second
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._appended.wait(), min(timeout, 0.5))

    async def history(
        self, *, after: str | None, limit: int, runid: str | None = None, type: str | None = None
    ) -> tuple[list[tuple[str, CloudEvent]], str | None]:
        from eventing.history_kafka import read_history

        return await asyncio.get_running_loop().run_in_executor(
            self._pool, read_history, self.servers, self.topic, after, limit, runid, type
        )

    async def close(self) -> None:
        if self._producer is not None:
            await asyncio.get_running_loop().run_in_executor(self._pool, self._producer.close, 10)
        self._pool.shutdown(wait=False)


class KafkaGroupConsumer:
    """One consumer group in its own thread; the loop side tracks acks and asks the thread to commit."""

    def __init__(self, log_: KafkaEventLog, group: str):
        self.log, self.group = log_, group
        self._records: asyncio.Queue[Record] = asyncio.Queue()
        self._commits: queue.Queue[dict[TopicPartition, OffsetAndMetadata] | None] = queue.Queue()
        self._inflight: dict[int, deque[int]] = {}
        self._done: dict[int, set[int]] = {}
        self._committable: dict[int, int] = {}
        self._flush: asyncio.TimerHandle | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._buffered = 0

    async def ready(self) -> None:
        if self._thread is not None:
            return
        loop = asyncio.get_running_loop()
        joined: asyncio.Future = loop.create_future()
        self._thread = threading.Thread(target=self._run, args=(loop, joined), name=f"kafka-{self.group}", daemon=True)
        self._thread.start()
        await asyncio.wait_for(joined, 60)

    def _run(self, loop: asyncio.AbstractEventLoop, joined: asyncio.Future) -> None:
        try:
            consumer = self._join()
        except Exception as exc:
            error = Unavailable(f"consumer group {self.group} could not join: {exc}")
            loop.call_soon_threadsafe(lambda: joined.done() or joined.set_exception(error))
            return
        loop.call_soon_threadsafe(lambda: joined.done() or joined.set_result(None))
        try:
            while not self._stop.is_set():
                self._do_commits(consumer, wait=False)
                paused = self._buffered > 2000
                (consumer.pause if paused else consumer.resume)(*consumer.assignment())
                batches = consumer.poll(timeout_ms=100, max_records=500)
                records = [self._record(m) for msgs in batches.values() for m in msgs]
                if records:
                    loop.call_soon_threadsafe(self._deliver, records)
            self._do_commits(consumer, wait=True)
        except Exception:
            log.exception("consumer group %s stopped", self.group)
        finally:
            consumer.close(autocommit=False)

    def _join(self) -> KafkaConsumer:
        consumer = KafkaConsumer(
            bootstrap_servers=self.log.servers,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            **GROUP_TIMEOUTS,
            **FETCH,
        )
        consumer.subscribe([self.log.topic])
        deadline = time.monotonic() + 60
        while not consumer.assignment():
            if time.monotonic() > deadline:
                raise Unavailable(f"consumer group {self.group} was not assigned partitions within 60 s")
            consumer.poll(timeout_ms=100, max_records=1)
            # a poll before assignment returns nothing; after it, positions are not advanced yet
        pins = {}
        for tp in consumer.assignment():
            if consumer.committed(tp) is None:  # a new group starts at the end: pin it so nothing is skipped
                pins[tp] = OffsetAndMetadata(consumer.position(tp), "", -1)
        if pins:
            consumer.commit(pins)
        return consumer

    def _record(self, message: Any) -> Record | None:
        try:
            event = from_kafka(message.headers or [], message.key, message.value)
        except InvalidEvent as exc:
            log.warning(
                "skipping a record that is not a CloudEvent at %s/%s: %s", message.partition, message.offset, exc
            )
            event = None
        key = message.key.decode("utf-8", "replace") if message.key else None
        return Record((message.partition, message.offset), key, event)  # type: ignore[arg-type]

    def _deliver(self, records: list[Record]) -> None:
        self._buffered += len(records)  # only the loop writes it; the thread only reads it
        for record in records:
            self._records.put_nowait(record)

    def _do_commits(self, consumer: KafkaConsumer, wait: bool) -> None:
        """Send the commits the loop asked for: asynchronously while running (a synchronous commit holds the
        fetches behind a round trip), synchronously when closing."""
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        while True:
            try:
                item = self._commits.get_nowait()
            except queue.Empty:
                break
            if item:
                offsets.update(item)
        if not offsets:
            return
        try:
            if wait:
                consumer.commit(offsets)
            else:
                consumer.commit_async(offsets, self._committed)
        except KafkaError as exc:
            self._committed(offsets, exc)

    def _committed(self, offsets: dict[TopicPartition, OffsetAndMetadata], result: Any) -> None:
        if isinstance(result, Exception):
            log.warning("consumer group %s: commit failed (will be redelivered): %s", self.group, result)

    async def fetch(self, max_records: int, timeout: float) -> list[Record]:
        await self.ready()
        try:
            first = await asyncio.wait_for(self._records.get(), timeout)
        except TimeoutError:
            return []
        taken = [first]
        while len(taken) < max_records and not self._records.empty():
            taken.append(self._records.get_nowait())
        self._buffered -= len(taken)
        out = []
        for record in taken:
            partition, offset = record.position
            self._inflight.setdefault(partition, deque()).append(offset)
            if record.event is None:
                self.ack(record)
            else:
                out.append(record)
        return out

    def ack(self, record: Record) -> None:
        partition, offset = record.position
        done = self._done.setdefault(partition, set())
        done.add(offset)
        inflight = self._inflight[partition]
        while inflight and inflight[0] in done:
            done.discard(inflight[0])
            self._committable[partition] = inflight.popleft() + 1
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(COMMIT_DELAY_S, self._commit)

    def _commit(self) -> None:
        self._flush = None
        if self._committable:
            topic = self.log.topic
            self._commits.put(
                {TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in self._committable.items()}
            )
            self._committable = {}

    async def close(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
        self._commit()
        self._stop.set()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 15)
