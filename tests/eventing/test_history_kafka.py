"""The broker's history over Kafka: a watcher paging with the cursor sees every event once, whatever the
records' timestamps say (other producers, other clocks)."""

from __future__ import annotations

import time

import aiohttp
from aiokafka import AIOKafkaProducer

from eventing.broker import BrokerServer
from eventing.events import new_event
from eventing.wire import to_kafka
from infra.settings import load_settings
from tests.eventing.conftest import broker_env


async def test_a_watcher_paging_the_history_sees_every_event_when_timestamps_go_back(tmp_path, request) -> None:
    settings = load_settings(broker_env("kafka", tmp_path, request), config_file=None)
    async with BrokerServer(settings, sources=(), port=0) as broker:
        producer = AIOKafkaProducer(bootstrap_servers=broker.log.servers)
        await producer.start()
        now, sent = int(time.time() * 1000), []
        try:
            for i in range(120):
                partition = i % 4
                # partition 0's producer has a clock running backwards; the others' go forwards
                stamp = now - 1000 * i if partition == 0 else now + 10 * i
                event = new_event("t", "other-producer", {"i": i}, runid=f"run-{partition}")
                key, headers, value = to_kafka(event)
                await producer.send_and_wait(
                    broker.log.topic, value, key=key, headers=headers, partition=partition, timestamp_ms=stamp
                )
                sent.append(event.get_id())
        finally:
            await producer.stop()
        seen: list[str] = []
        after = ""
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                async with http.get(f"{broker.url}/events", params={"after": after, "limit": "7"}) as r:
                    page = await r.json()
                if not page["events"]:
                    break
                seen += [e["id"] for e in page["events"]]
                after = page["next"]
    assert sorted(seen) == sorted(sent)
