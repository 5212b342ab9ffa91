"""Trigger filters and Knative delivery rules, end to end: a real broker and a real subscriber, both backends."""

from __future__ import annotations

import asyncio
import base64
import itertools
import time

import aiohttp
import orjson
import pytest
from aiohttp import web

from eventing.bindings import to_http_binary, to_http_structured
from eventing.events import STEP_FAILED, new_event
from eventing.triggers import DeliverySpec, Trigger
from infra.localservices import free_port
from tests.eventing.conftest import reply_with
from tests.eventually import eventually


async def post(broker, event, structured: bool = False) -> int:
    headers, body = (to_http_structured if structured else to_http_binary)(event)
    timeout = aiohttp.ClientTimeout(total=40)
    async with aiohttp.ClientSession(timeout=timeout) as s, s.post(broker.url + "/", data=body, headers=headers) as r:
        return r.status


async def test_event_is_delivered_and_ingress_answers_202(make_broker, subscriber):
    trigger = Trigger("all", subscriber.on("/all", lambda e, n: web.Response(status=204)))
    async with make_broker([trigger]) as broker:
        event = new_event("dev.knflow.test", "tests", {"x": 1})
        assert await post(broker, event) == 202
        await subscriber.wait_for(lambda: subscriber.at("/all"), 15)
        got = subscriber.at("/all")[0].event
        assert got.get_id() == event.get_id() and got.get_data() == {"x": 1}


async def test_filter_attributes_exact_and_filters_dialect(make_broker, subscriber):
    triggers = [
        Trigger("exact", subscriber.on("/exact", lambda e, n: web.Response()), filter={"type": "a.b", "color": "red"}),
        Trigger(
            "dialect",
            subscriber.on("/dialect", lambda e, n: web.Response()),
            filter={"type": "never"},  # filters wins over filter
            filters=[{"prefix": {"type": "a."}}, {"any": [{"suffix": {"source": "-x"}}, {"exact": {"color": "blue"}}]}],
        ),
        Trigger(
            "not", subscriber.on("/not", lambda e, n: web.Response()), filters=[{"not": {"exact": {"type": "a.b"}}}]
        ),
    ]
    async with make_broker(triggers) as broker:
        e1 = new_event("a.b", "src", extensions={"color": "red"})
        e2 = new_event("a.c", "src-x", extensions={"color": "Red"})
        e3 = new_event("a.d", "src", extensions={"color": "blue"})
        e4 = new_event("z.z", "src-x")
        for e in (e1, e2, e3, e4):
            assert await post(broker, e) == 202
        await subscriber.wait_for(lambda: len(subscriber.at("/not")) == 3, 15)
        await subscriber.wait_for(lambda: len(subscriber.at("/dialect")) == 2)
        await subscriber.wait_for(lambda: len(subscriber.at("/exact")) == 1)
        ids = lambda path: {r.event.get_id() for r in subscriber.at(path)}  # noqa: E731
        assert ids("/exact") == {e1.get_id()}  # case-sensitive: "Red" is not "red"
        assert ids("/dialect") == {e2.get_id(), e3.get_id()}
        assert ids("/not") == {e2.get_id(), e3.get_id(), e4.get_id()}


async def test_retries_with_exponential_backoff_then_succeeds(make_broker, subscriber):
    url = subscriber.on("/flaky", lambda e, n: web.Response(status=503 if n <= 3 else 200))
    delivery = DeliverySpec(retry=3, backoff_policy="exponential", backoff_delay="PT0.2S")
    async with make_broker([Trigger("flaky", url, delivery=delivery)]) as broker:
        assert await post(broker, new_event("t", "s")) == 202
        await subscriber.wait_for(lambda: len(subscriber.at("/flaky")) == 4, 15)
    times = [r.at for r in subscriber.at("/flaky")]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for gap, want in zip(gaps, (0.2, 0.4, 0.8), strict=True):
        assert want - 0.02 <= gap <= want + 0.25, gaps


async def test_linear_backoff_and_retryable_statuses(make_broker, subscriber):
    statuses = {1: 404, 2: 409, 3: 429, 4: 408, 5: 200}
    url = subscriber.on("/lin", lambda e, n: web.Response(status=statuses[n]))
    delivery = DeliverySpec(retry=5, backoff_policy="linear", backoff_delay=0.1)
    async with make_broker([Trigger("lin", url, delivery=delivery)]) as broker:
        await post(broker, new_event("t", "s"))
        await subscriber.wait_for(lambda: len(subscriber.at("/lin")) == 5, 15)
    times = [r.at for r in subscriber.at("/lin")]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for gap, want in zip(gaps, (0.1, 0.2, 0.3, 0.4), strict=True):
        assert want - 0.02 <= gap <= want + 0.25, gaps


async def test_dead_letter_carries_error_extensions_and_step_failed_is_published(make_broker, subscriber):
    url = subscriber.on("/down", lambda e, n: web.Response(status=500, text=f"boom {n}"))
    dls = subscriber.on("/dls", lambda e, n: web.Response(status=202))
    failed = subscriber.on("/failed", lambda e, n: web.Response())
    delivery = DeliverySpec(retry=2, backoff_delay="PT0.05S", dead_letter_sink=dls)
    triggers = [
        Trigger("down", url, filter={"type": "work"}, delivery=delivery),
        Trigger("failures", failed, filter={"type": STEP_FAILED}),
    ]
    async with make_broker(triggers) as broker:
        event = new_event("work", "s", {"k": "v"})
        await post(broker, event)
        await subscriber.wait_for(lambda: subscriber.at("/dls") and subscriber.at("/failed"), 15)
    assert len(subscriber.at("/down")) == 3  # 1 + retry 2
    dead = subscriber.at("/dls")[0].event
    assert dead.get_id() == event.get_id()
    assert dead.get_extension("knativeerrordest") == url
    assert dead.get_extension("knativeerrorcode") == "500"
    assert base64.b64decode(dead.get_extension("knativeerrordata")) == b"boom 3"
    report = subscriber.at("/failed")[0].event
    assert report.get_extension("runid") == event.get_extension("runid")
    data = report.get_data()
    assert data["event_id"] == event.get_id() and data["event_type"] == "work"
    assert data["trigger"] == "down" and data["subscriber"] == url
    assert data["status"] == 500 and data["error"] == "boom 3" and data["attempts"] == 3


async def test_no_retry_on_400(make_broker, subscriber):
    url = subscriber.on("/bad", lambda e, n: web.Response(status=400, text="bad input"))
    failed = subscriber.on("/failed", lambda e, n: web.Response())
    triggers = [
        Trigger("bad", url, filter={"type": "work"}, delivery=DeliverySpec(retry=3, backoff_delay=0.05)),
        Trigger("failures", failed, filter={"type": STEP_FAILED}),
    ]
    async with make_broker(triggers) as broker:
        await post(broker, new_event("work", "s"))
        await subscriber.wait_for(lambda: subscriber.at("/failed"), 15)
        assert len(subscriber.at("/bad")) == 1
        assert subscriber.at("/failed")[0].event.get_data()["attempts"] == 1


async def test_retry_after_is_honoured_when_opted_in(make_broker, subscriber):
    url = subscriber.on(
        "/busy", lambda e, n: web.Response(status=429, headers={"Retry-After": "1"}) if n == 1 else web.Response()
    )
    delivery = DeliverySpec(retry=1, backoff_delay=0.05, retry_after_max="PT0.6S")
    async with make_broker([Trigger("busy", url, delivery=delivery)]) as broker:
        await post(broker, new_event("t", "s"))
        await subscriber.wait_for(lambda: len(subscriber.at("/busy")) == 2, 15)
    a, b = (r.at for r in subscriber.at("/busy"))
    assert 0.58 <= b - a <= 0.9  # Retry-After 1 s capped at retryAfterMax 0.6 s


@pytest.mark.parametrize("structured", [False, True], ids=["binary-reply", "structured-reply"])
async def test_reply_event_is_routed_to_the_next_trigger(make_broker, subscriber, structured):
    def step(event, n):
        return reply_with(new_event("step.two", "step-one", {"from": event.get_id()}, cause=event), structured)

    triggers = [
        Trigger("one", subscriber.on("/one", step), filter={"type": "step.one"}),
        Trigger("two", subscriber.on("/two", lambda e, n: web.Response()), filter={"type": "step.two"}),
    ]
    async with make_broker(triggers) as broker:
        first = new_event("step.one", "s")
        await post(broker, first, structured=True)
        await subscriber.wait_for(lambda: subscriber.at("/two"), 15)
    second = subscriber.at("/two")[0].event
    assert second.get_data() == {"from": first.get_id()}
    assert second.get_extension("runid") == first.get_extension("runid")


async def test_runid_order_is_kept_and_a_down_subscriber_does_not_block_others(make_broker, subscriber):
    slow = subscriber.on("/down", lambda e, n: web.Response(status=503))
    triggers = [
        Trigger("down", slow, delivery=DeliverySpec(retry=50, backoff_delay=0.2)),
        Trigger("ordered", subscriber.on("/ordered", lambda e, n: web.Response())),
    ]
    async with make_broker(triggers) as broker:
        sent = []
        for i in range(30):
            event = new_event("t", "s", {"i": i}, runid=f"run-{i % 3}")
            sent.append(event)
            assert await post(broker, event) == 202
        await subscriber.wait_for(lambda: len(subscriber.at("/ordered")) == 30, 15)
    for run in ("run-0", "run-1", "run-2"):
        got = [r.event.get_data()["i"] for r in subscriber.at("/ordered") if r.event.get_extension("runid") == run]
        assert got == sorted(got) and len(got) == 10


async def test_ingress_rejects_invalid_and_oversized_events(make_broker):
    async with make_broker([], KNFLOW_EVENTING_MAX_EVENT_BYTES="2000") as broker, aiohttp.ClientSession() as s:
        async with s.post(broker.url + "/", data=b"{}", headers={"content-type": "application/json"}) as r:
            assert r.status == 400 and "CloudEvent" in (await r.json())["error"]
        headers, body = to_http_binary(new_event("t", "s", {"blob": "x" * 5000}))
        async with s.post(broker.url + "/default/default", data=body, headers=headers) as r:
            assert r.status == 413
        headers, body = to_http_binary(new_event("t", "s", {"small": 1}))
        async with s.post(broker.url + "/default/default", data=body, headers=headers) as r:
            assert r.status == 202


async def test_triggers_are_managed_over_http_and_survive_restart(make_broker, subscriber):
    spec = {
        "filter": {"attributes": {"type": "x"}},
        "subscriber": {"uri": subscriber.url + "/x"},
        "delivery": {
            "retry": 2,
            "backoffPolicy": "linear",
            "backoffDelay": "PT0.1S",
            "deadLetterSink": {"uri": subscriber.url + "/dls"},
        },
    }
    async with make_broker([]) as broker, aiohttp.ClientSession() as s:
        async with s.put(broker.url + "/triggers/x-trigger", data=orjson.dumps(spec)) as r:
            assert r.status == 200
        async with s.put(broker.url + "/triggers/bad", data=b'{"subscriber": {"uri": "nope"}}') as r:
            assert r.status == 400
        await post(broker, new_event("x", "s"))
        await subscriber.wait_for(lambda: subscriber.at("/x"), 15)
    async with make_broker([]) as broker, aiohttp.ClientSession() as s:
        async with s.get(broker.url + "/triggers") as r:
            items = (await r.json())["items"]
        assert [(i["name"], i["spec"]) for i in items] == [("x-trigger", {**spec, "delivery": {**spec["delivery"]}})]
        assert await broker.wait_ready(30)
        async with s.delete(broker.url + "/triggers/x-trigger") as r:
            assert r.status == 204
        async with s.get(broker.url + "/triggers") as r:
            assert (await r.json())["items"] == []


async def test_event_history_filters_by_run_and_pages_by_cursor(make_broker):
    async with make_broker([]) as broker, aiohttp.ClientSession() as s:
        for i in range(5):
            await post(broker, new_event("h", "s", {"i": i}, runid="run-h" if i % 2 == 0 else "run-other"))
        got, cursor = [], None
        deadline = time.monotonic() + 15
        while len(got) < 3 and time.monotonic() < deadline:
            params = {"runid": "run-h", "limit": "2", "wait": "1", **({"after": cursor} if cursor else {})}
            async with s.get(broker.url + "/events", params=params) as r:
                page = await r.json()
            got += page["events"]
            cursor = page["next"]
        assert [e["data"]["i"] for e in got] == [0, 2, 4]
        assert all(e["runid"] == "run-h" and "cursor" in e for e in got)


async def test_committed_offsets_survive_a_restart_and_events_sent_while_down_are_delivered(make_broker, subscriber):
    trigger = Trigger("durable", subscriber.on("/durable", lambda e, n: web.Response()))
    first = [new_event("d", "s", {"i": i}) for i in range(20)]
    async with make_broker([trigger]) as broker:
        for event in first:
            assert await post(broker, event) == 202
        await subscriber.wait_for(lambda: len(subscriber.at("/durable")) == 20, 15)
        consumer = broker._dispatchers["durable"].consumer
        await eventually(lambda: consumer.lag() == 0, 15, "every delivery acked before the clean stop")
    async with make_broker([]) as broker:  # the trigger comes back from the broker's own store
        later = [new_event("d", "s", {"i": i}) for i in range(20, 30)]
        for event in later:
            assert await post(broker, event) == 202
        await subscriber.wait_for(lambda: len(subscriber.at("/durable")) == 30, 15)
        await asyncio.sleep(0.5)  # time for a redelivery of the first 20 to show, if the restart made one
    ids = [r.event.get_id() for r in subscriber.at("/durable")]
    assert len(ids) == 30 and set(ids) == {e.get_id() for e in first + later}


async def test_timeout_and_network_errors_are_retried(make_broker, subscriber):
    async def slow_then_fast(event, n):
        if n == 1:
            await asyncio.sleep(1.0)
        return web.Response()

    slow = subscriber.on("/slow", slow_then_fast)
    failed = subscriber.on("/failed", lambda e, n: web.Response())
    closed = f"http://127.0.0.1:{free_port()}/nobody"
    triggers = [
        Trigger(
            "slow", slow, filter={"type": "work"}, delivery=DeliverySpec(retry=2, backoff_delay=0.05, timeout="PT0.3S")
        ),
        Trigger("closed", closed, filter={"type": "work"}, delivery=DeliverySpec(retry=2, backoff_delay=0.05)),
        Trigger("failures", failed, filter={"type": STEP_FAILED}),
    ]
    async with make_broker(triggers) as broker:
        await post(broker, new_event("work", "s"))
        await subscriber.wait_for(lambda: len(subscriber.at("/slow")) == 2 and subscriber.at("/failed"), 15)
    report = subscriber.at("/failed")[0].event.get_data()
    assert report["trigger"] == "closed" and report["status"] == 0 and report["attempts"] == 3
    assert len(subscriber.at("/failed")) == 1  # the slow subscriber succeeded on its retry


async def test_a_reply_stays_in_the_namespace_of_the_event_it_answers(make_broker, subscriber):
    def step(event, n):
        claims = {"namespace": "team-b"} if event.get_data()["claim"] else {}  # or none: it gets the event's
        return reply_with(new_event("step.two", "step-one", {"n": n}, extensions=claims), False)

    triggers = [
        Trigger("one", subscriber.on("/one", step), filter={"type": "step.one"}),
        Trigger("two", subscriber.on("/two", lambda e, n: web.Response()), filter={"type": "step.two"}),
        Trigger("failures", subscriber.on("/failed", lambda e, n: web.Response()), filter={"type": STEP_FAILED}),
    ]
    async with make_broker(triggers) as broker:
        await post(broker, new_event("step.one", "s", {"claim": False}, extensions={"namespace": "team-a"}))
        await subscriber.wait_for(lambda: subscriber.at("/two"), 15)
        await post(broker, new_event("step.one", "s", {"claim": True}, extensions={"namespace": "team-a"}))
        await subscriber.wait_for(lambda: subscriber.at("/failed"), 15)
    assert [r.event.get_extension("namespace") for r in subscriber.at("/two")] == ["team-a"]
    report = subscriber.at("/failed")[0].event.get_data()
    assert report["trigger"] == "one" and "claims namespace 'team-b'" in report["error"], report
