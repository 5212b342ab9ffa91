"""The Kafka clients alone against the same tansu: how many CloudEvent records per second each produces and consumes.

This is the ceiling the broker's Kafka log sits under (no HTTP, no delivery): kafka-python (what the
log used before), aiokafka (what it uses now) and, when installed, confluent-kafka (librdkafka), each
producing ``n`` binary-mode records keyed by runid with acks=all and reading them back in a consumer
group, timed and with its own CPU.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from dataclasses import dataclass

from eventing.events import new_event
from eventing.wire import to_kafka


@dataclass(frozen=True)
class Ceiling:
    client: str
    produce_per_s: float
    produce_cpu_us: float
    consume_per_s: float
    consume_cpu_us: float

    def line(self) -> str:
        return (
            f"  {self.client:<13} alone: produce {self.produce_per_s:8,.0f} msg/s "
            f"({self.produce_cpu_us:4.0f} us CPU/msg)   consume {self.consume_per_s:8,.0f} msg/s "
            f"({self.consume_cpu_us:4.0f} us CPU/msg)"
        )


def _records(n: int) -> list[tuple[bytes | None, list[tuple[str, bytes]], bytes]]:
    return [to_kafka(new_event("bench.event", "bench", {"i": i}, runid=f"run-{i % 64}")) for i in range(n)]


def _timed(started: tuple[float, float], n: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter() - started[0], time.process_time() - started[1]
    return n / wall, cpu / n * 1e6


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def kafka_python_ceiling(servers: str, topic: str, n: int) -> Ceiling:
    from kafka import KafkaConsumer, KafkaProducer

    records = _records(n)
    producer = KafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=1)
    started = _now()
    for key, headers, value in records:
        producer.send(topic, value, key=key, headers=headers)
    producer.flush()
    produced = _timed(started, n)
    producer.close()
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=servers,
        group_id=f"ceiling-{topic}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_interval_ms=3000,
    )
    while not consumer.assignment():
        consumer.poll(timeout_ms=100, max_records=1)  # join first: the ceiling is reading, not the join
    consumer.seek_to_beginning()
    started, got = _now(), 0
    while got < n:
        got += sum(len(batch) for batch in consumer.poll(timeout_ms=1000, max_records=2000).values())
    consumed = _timed(started, n)
    consumer.close()
    return Ceiling("kafka-python", *produced, *consumed)


async def aiokafka_ceiling(servers: str, topic: str, n: int) -> Ceiling:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    records = _records(n)
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=1)
    await producer.start()
    started = _now()
    sent = [await producer.send(topic, value, key=key, headers=headers) for key, headers, value in records]
    await asyncio.gather(*sent)
    produced = _timed(started, n)
    await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=servers,
        group_id=f"ceiling-{topic}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        rebalance_timeout_ms=3000,
    )
    await consumer.start()
    while not consumer.assignment():
        await asyncio.sleep(0.02)
    await consumer.seek_to_beginning()
    started, got = _now(), 0
    while got < n:
        got += sum(len(batch) for batch in (await consumer.getmany(timeout_ms=1000, max_records=2000)).values())
    consumed = _timed(started, n)
    await consumer.stop()
    return Ceiling("aiokafka", *produced, *consumed)


def confluent_ceiling(servers: str, topic: str, n: int) -> Ceiling:
    """librdkafka through confluent-kafka (its own C threads do the I/O; their CPU is this process's too)."""
    from confluent_kafka import Consumer, Producer

    records = _records(n)
    producer = Producer({"bootstrap.servers": servers, "acks": "all", "linger.ms": 1})
    started = _now()
    for i, (key, headers, value) in enumerate(records):
        producer.produce(topic, value, key, headers=headers)
        if i % 1000 == 999:
            producer.poll(0)  # serve delivery reports, so the local queue does not fill
    producer.flush()
    produced = _timed(started, n)
    consumer = Consumer(
        {
            "bootstrap.servers": servers,
            "group.id": f"ceiling-{topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    consumer.subscribe([topic])
    got = len(consumer.consume(num_messages=1, timeout=30))  # join first: the ceiling is reading, not the join
    started = _now()
    while got < n:
        got += len(consumer.consume(num_messages=min(2000, n - got), timeout=1))  # it waits to fill a batch
    consumed = _timed(started, n)
    consumer.close()
    return Ceiling("confluent", *produced, *consumed)


async def measure(servers: str, n: int) -> list[Ceiling]:
    """Each client on its own topic of the same cluster (4 partitions, as the broker's); confluent-kafka (librdkafka)
    too when it is installed (``pip install confluent-kafka``; not a dependency of knflow)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    topics = ("ceiling-kp", "ceiling-aio", "ceiling-rd")
    await admin.create_topics([NewTopic(topic, 4, 1) for topic in topics])
    await admin.close()
    loop = asyncio.get_running_loop()
    found = [await loop.run_in_executor(None, kafka_python_ceiling, servers, "ceiling-kp", n)]
    found.append(await aiokafka_ceiling(servers, "ceiling-aio", n))
    if importlib.util.find_spec("confluent_kafka") is not None:
        found.append(await loop.run_in_executor(None, confluent_ceiling, servers, "ceiling-rd", n))
    return found
