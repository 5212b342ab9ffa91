"""A Kafka trigger that has caught up stops fetching (each waiting fetch costs tansu and the broker CPU) and still
delivers what comes next: events the broker appends at once, events other producers append within a poll."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiokafka import AIOKafkaProducer

from eventing.broker import BrokerServer
from eventing.events import new_event
from eventing.log_kafka import IDLE_POLL_S
from eventing.triggers import Trigger
from eventing.wire import to_kafka
from infra.settings import load_settings
from tests.eventing.conftest import broker_env
from tests.eventually import eventually


def count_fetches(broker: BrokerServer, trigger: str) -> list[int]:
    """A counter of the fetch requests the trigger's consumer sends from now on."""
    fetcher = broker._dispatchers[trigger].consumer._consumer._fetcher
    sent = [0]
    original = fetcher._proc_fetch_request

    def counted(*args: object, **kwargs: object) -> object:  # aiokafka's coroutine, returned as it is
        sent[0] += 1
        return original(*args, **kwargs)

    fetcher._proc_fetch_request = counted
    return sent


async def test_an_idle_kafka_trigger_stops_fetching_and_an_append_wakes_it(tmp_path, request, subscriber) -> None:
    settings = load_settings(broker_env("kafka", tmp_path, request), config_file=None)
    url = subscriber.on("/idle", lambda e, n: web.Response(status=204))
    async with BrokerServer(settings, [Trigger("idle", url)], sources=(), port=0) as broker:
        assert await broker.wait_ready(30)
        await broker.publish(new_event("dev.knflow.test", "tests", {"n": 0}))
        await subscriber.wait_for(lambda: len(subscriber.at("/idle")) == 1, 15)
        sent = count_fetches(broker, "idle")
        await asyncio.sleep(1.0)  # the span measured: one second with nothing appended
        # a fetch waits 10 ms at tansu: a consumer that kept fetching sends ~100 a second; an idle one polls
        assert sent[0] <= 4 * (1.0 / IDLE_POLL_S), f"{sent[0]} fetch requests in one idle second"
        await broker.publish(new_event("dev.knflow.test", "tests", {"n": 1}))
        await subscriber.wait_for(lambda: len(subscriber.at("/idle")) == 2, 15)


async def test_events_other_producers_append_reach_an_idle_kafka_trigger(tmp_path, request, subscriber) -> None:
    settings = load_settings(broker_env("kafka", tmp_path, request), config_file=None)
    url = subscriber.on("/other", lambda e, n: web.Response(status=204))
    async with BrokerServer(settings, [Trigger("other", url)], sources=(), port=0) as broker:
        assert await broker.wait_ready(30)
        await eventually(lambda: broker._dispatchers["other"].consumer._consumer.paused(), 10, "an idle consumer")
        producer = AIOKafkaProducer(bootstrap_servers=broker.log.servers)
        await producer.start()
        try:
            sent = [new_event("dev.knflow.test", "another-process", {"i": i}, runid=f"run-{i}") for i in range(8)]
            for event in sent:
                key, headers, value = to_kafka(event)
                await producer.send_and_wait(broker.log.topic, value, key=key, headers=headers)
        finally:
            await producer.stop()
        await subscriber.wait_for(lambda: len(subscriber.at("/other")) == len(sent), 15)
        assert sorted(r.event.get_id() for r in subscriber.at("/other")) == sorted(e.get_id() for e in sent)
