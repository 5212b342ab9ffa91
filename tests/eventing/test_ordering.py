"""Delivery is ordered per partition key (the ``partitionkey`` extension, else the ``runid``), keys in parallel."""

from __future__ import annotations

import asyncio

from aiohttp import web

from eventing.bindings import from_kafka, to_kafka
from eventing.events import new_event, partition_key
from eventing.triggers import Trigger
from tests.eventing.test_delivery import post
from tests.eventually import eventually


async def test_events_of_one_run_with_their_own_keys_are_delivered_in_parallel(make_broker, subscriber):
    both_in = asyncio.Event()
    inside: set[str] = set()

    async def hold(event, n):
        inside.add(event.get_extension("partitionkey"))
        if len(inside) == 2:
            both_in.set()
        await asyncio.wait_for(both_in.wait(), 20)  # a second key's event must arrive while this one is held
        return web.Response(status=204)

    trigger = Trigger("trials", subscriber.on("/trials", hold))
    async with make_broker([trigger]) as broker:
        for key in ("trial-0", "trial-1"):
            event = new_event("trial", "tests", runid="run-1", extensions={"partitionkey": f"run-1/{key}"})
            assert await post(broker, event) == 202
        await eventually(lambda: len(subscriber.at("/trials")) == 2, 30, "both trials delivered")
        assert both_in.is_set()


async def test_events_of_one_key_are_delivered_in_order_one_at_a_time(make_broker, subscriber):
    busy = {"now": 0, "most": 0}

    async def one_at_a_time(event, n):
        busy["now"] += 1
        busy["most"] = max(busy["most"], busy["now"])
        await asyncio.sleep(0.02)  # held a while: a second delivery of the key would overlap it
        busy["now"] -= 1
        return web.Response(status=204)

    trigger = Trigger("ordered", subscriber.on("/ordered", one_at_a_time))
    async with make_broker([trigger]) as broker:
        sent = [new_event("t", "tests", {"i": i}, runid="run-1", extensions={"partitionkey": "k"}) for i in range(10)]
        for event in sent:
            assert await post(broker, event) == 202
        await eventually(lambda: len(subscriber.at("/ordered")) == 10, 30, "all delivered")
    assert [r.event.get_data()["i"] for r in subscriber.at("/ordered")] == list(range(10))
    assert busy["most"] == 1


def test_the_kafka_key_is_the_partition_key_else_the_runid():
    keyed = new_event("t", "s", runid="run-1", extensions={"partitionkey": "run-1/trial-3"})
    plain = new_event("t", "s", runid="run-1")
    assert to_kafka(keyed)[0] == b"run-1/trial-3" and partition_key(keyed) == "run-1/trial-3"
    assert to_kafka(plain)[0] == b"run-1" and partition_key(plain) == "run-1"
    for event in (keyed, plain):
        key, headers, value = to_kafka(event)
        back = from_kafka(headers, key, value)
        assert back.get_attributes() == event.get_attributes()


def test_the_partition_of_a_key_is_kafkas_default_murmur2_partition():
    from aiokafka.partitioner import DefaultPartitioner

    from eventing.log_kafka import CachedPartitioner

    cached, reference = CachedPartitioner(size=8), DefaultPartitioner()
    for i in range(200):
        key = f"run-{i % 37}/trial-{i % 5}".encode()
        assert cached(key, [0, 1, 2, 3], [0, 1, 2, 3]) == reference(key, [0, 1, 2, 3], [0, 1, 2, 3])
