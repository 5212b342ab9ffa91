"""The broker's ``/metrics``, read with prometheus_client's parser while a real broker delivers to a real subscriber:
events accepted by type and source kind, deliveries, retries, dead letters, delivery time and lag per trigger."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from eventing.events import STEP_FAILED, new_event
from eventing.metrics import MAX_ACCEPTED_SERIES, OTHER, BrokerMetrics, source_kind
from eventing.triggers import DeliverySpec, Trigger
from tests.eventing.test_delivery import post
from tests.eventually import eventually
from tests.scrape import Samples, scrape, value


async def read(broker) -> Samples:  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as http:
        return await scrape(http, broker.url)


async def test_broker_counts_accepted_delivered_retried_dead_lettered_and_lag_per_trigger(make_broker, subscriber):
    gate = asyncio.Event()

    async def held(event, n):  # type: ignore[no-untyped-def]
        await gate.wait()
        return web.Response(status=200)

    quick = DeliverySpec(retry=1, backoff_delay="PT0.05S")
    triggers = [
        Trigger("ok", subscriber.on("/ok", lambda e, n: web.Response()), filter={"type": "work.ok"}),
        Trigger(
            "flaky",
            subscriber.on("/flaky", lambda e, n: web.Response(status=503 if n == 1 else 200)),
            filter={"type": "work.flaky"},
            delivery=quick,
        ),
        Trigger(
            "down",
            subscriber.on("/down", lambda e, n: web.Response(status=500, text="boom")),
            filter={"type": "work.down"},
            delivery=DeliverySpec(retry=1, backoff_delay="PT0.05S", dead_letter_sink=f"{subscriber.url}/dls"),
        ),
        Trigger("held", subscriber.on("/held", held), filter={"type": "work.held"}),
    ]
    async with make_broker(triggers) as broker:
        before = await read(broker)
        assert value(before, "knflow_broker_trigger_lag", trigger="held") == 0
        assert value(before, "knflow_broker_deliveries_total", trigger="ok") == 0  # every trigger has its series
        for type_ in ("work.ok", "work.ok", "work.flaky", "work.down", "work.held", "work.held"):
            assert await post(broker, new_event(type_, "/tests/metrics")) == 202

        async def settled() -> Samples | None:
            s = await read(broker)
            done = value(s, "knflow_broker_deliveries_total", trigger="ok") == 2
            done &= value(s, "knflow_broker_deliveries_total", trigger="flaky") == 1
            done &= value(s, "knflow_broker_dead_letters_total", trigger="down") == 1
            done &= value(s, "knflow_broker_trigger_lag", trigger="held") == 2
            # counted as dead before the step.failed report is published: wait for that too
            done &= value(s, "knflow_broker_events_accepted_total", type=STEP_FAILED, source="knflow/broker") == 1
            return s if done else None

        s = await eventually(settled, 20, "deliveries counted, step.failed published, the held trigger lagging by 2")
        assert value(s, "knflow_broker_events_accepted_total", type="work.ok", source="tests/metrics") == 2
        assert value(s, "knflow_broker_retries_total", trigger="flaky") == 1
        assert value(s, "knflow_broker_retries_total", trigger="down") == 1
        assert value(s, "knflow_broker_retries_total", trigger="ok") == 0
        assert value(s, "knflow_broker_deliveries_total", trigger="down") == 0
        assert value(s, "knflow_broker_delivery_duration_seconds_count", trigger="ok") == 2
        assert value(s, "knflow_broker_delivery_duration_seconds_bucket", trigger="ok", le="+Inf") == 2
        assert value(s, "knflow_broker_trigger_lag", trigger="ok") == 0

        gate.set()

        async def caught_up() -> bool:
            s = await read(broker)
            held_done = value(s, "knflow_broker_deliveries_total", trigger="held") == 2
            return held_done and value(s, "knflow_broker_trigger_lag", trigger="held") == 0

        await eventually(caught_up, 20, "the held trigger delivered and caught up")


async def test_event_types_with_quotes_backslashes_and_newlines_are_escaped(make_broker):
    odd = 'say "hi"\\now\nplease'
    async with make_broker([]) as broker:
        assert await post(broker, new_event(odd, "/tests/odd"), structured=True) == 202
        s = await read(broker)
    assert value(s, "knflow_broker_events_accepted_total", type=odd, source="tests/odd") == 1


def test_source_kind_drops_the_instance_part_of_a_source() -> None:
    assert source_kind("knflow/ping/nightly") == "knflow/ping"
    assert source_kind("/functions/train") == "functions/train"
    assert source_kind("https://example.com/a/b/c") == "example.com/a"
    assert source_kind("x") == "x"


def test_invented_event_types_past_the_series_cap_count_as_other() -> None:
    metrics = BrokerMetrics()
    events = [new_event(f"dev.invented.{n}", "/client") for n in range(MAX_ACCEPTED_SERIES + 5)]
    metrics.accept(events)
    metrics.accept([new_event("dev.invented.0", "/client"), new_event("dev.invented.new", "/client")])
    values = metrics.accepted.values
    assert len(values) == MAX_ACCEPTED_SERIES + 1 and sum(values.values()) == MAX_ACCEPTED_SERIES + 7
    assert values[("dev.invented.0", "client")] == 2 and values[OTHER] == 6  # a known pair still counts apart
