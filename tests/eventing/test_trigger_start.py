"""Where a trigger starts and when it is ready: nothing accepted after a trigger's PUT is skipped, on both logs."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
from aiohttp import web

from eventing.events import new_event
from eventing.triggers import INITIAL_OFFSET_ANNOTATION, Trigger
from tests.eventing.test_delivery import post
from tests.eventually import eventually


def ids(subscriber, path: str) -> set[str]:
    return {r.event.get_id() for r in subscriber.at(path)}


async def test_events_accepted_while_a_new_group_joins_are_delivered(make_broker, subscriber):
    async with make_broker([]) as broker:
        await post(broker, new_event("t", "before"))  # the topic exists and holds something older
        trigger = Trigger("late", subscriber.on("/late", lambda e, n: web.Response(status=204)))
        assert await broker.set_trigger(trigger, ready_timeout=0) in (True, False)  # returns once pinned
        sent = [new_event("t", "after", {"i": i}) for i in range(20)]
        for event in sent:
            assert await post(broker, event) == 202
        await eventually(lambda: ids(subscriber, "/late") >= {e.get_id() for e in sent}, 40, "every event delivered")
        assert all(r.event.get_source() == "after" for r in subscriber.at("/late"))  # latest: nothing from before


async def test_initial_offset_earliest_starts_at_what_the_log_holds(make_broker, subscriber):
    async with make_broker([]) as broker, aiohttp.ClientSession() as s:
        old = [new_event("t", "old", {"i": i}) for i in range(3)]
        for event in old:
            assert await post(broker, event) == 202
        spec = {
            "metadata": {"annotations": {INITIAL_OFFSET_ANNOTATION: "earliest"}},
            "spec": {"subscriber": {"uri": subscriber.url + "/early"}},
        }
        async with s.put(broker.url + "/triggers/early", data=orjson.dumps(spec)) as r:
            assert r.status in (200, 202)
            assert (await r.json())["metadata"]["annotations"][INITIAL_OFFSET_ANNOTATION] == "earliest"
        await eventually(lambda: ids(subscriber, "/early") >= {e.get_id() for e in old}, 40, "old events delivered")
        bad = {**spec, "metadata": {"annotations": {INITIAL_OFFSET_ANNOTATION: "yesterday"}}}
        async with s.put(broker.url + "/triggers/bad", data=orjson.dumps(bad)) as r:
            assert r.status == 400
            assert INITIAL_OFFSET_ANNOTATION in (await r.json())["error"]


async def test_health_reports_ready_only_when_every_trigger_has_joined(make_broker, subscriber):
    trigger = Trigger("t1", subscriber.on("/t1", lambda e, n: web.Response(status=204)))
    async with make_broker([trigger]) as broker, aiohttp.ClientSession() as s:

        async def healthy() -> dict | None:  # the broker answers from its start; 503 names what is pending till then
            async with s.get(broker.url + "/health") as r:
                body = await r.json()
                assert r.status in (200, 503) and (r.status == 200 or body["pending"] == ["t1"]), body
                return body if r.status == 200 else None

        body = await eventually(healthy, 40, "every trigger ready")
        assert body["ready"] == body["triggers"] == 1
        async with s.get(broker.url + "/triggers") as r:
            assert [item["ready"] for item in (await r.json())["items"]] == [True]


async def test_triggers_join_in_parallel(make_broker, subscriber, backend):
    async with make_broker([]) as broker:
        triggers = [Trigger(f"p{i}", subscriber.on(f"/p{i}", lambda e, n: web.Response(status=204))) for i in range(6)]
        started = asyncio.get_running_loop().time()
        ready = await asyncio.gather(*(broker.set_trigger(t, ready_timeout=60) for t in triggers))
        took = asyncio.get_running_loop().time() - started
        assert all(ready)
        if backend == "kafka":  # one group joins in ~3 s; six one after another would take ~18 s
            assert took < 12, f"six triggers took {took:.1f}s to join"
