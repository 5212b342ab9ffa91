"""Ping sources added and removed at runtime through the broker: they tick on their cron, stop when deleted, and are
kept across a broker restart; bad ones are refused with the reason."""

from __future__ import annotations

import aiohttp
import pytest

from eventing.sources.ping import PING_TYPE
from eventing.triggers import Trigger


@pytest.fixture
def backend() -> str:
    return "embedded"  # sources sit above the log; the log backends are covered by test_delivery


def pings(subscriber) -> Trigger:
    return Trigger("pings", subscriber.on("/ping", lambda e, n: aiohttp.web.Response()), filter={"type": PING_TYPE})


async def history(broker_url: str, **query: str) -> dict:
    async with aiohttp.ClientSession() as s, s.get(f"{broker_url}/events", params=query) as r:
        assert r.status == 200
        return await r.json()


async def test_a_ping_source_put_at_runtime_ticks_on_its_seconds_cron_and_stops_when_deleted(make_broker, subscriber):
    async with make_broker([pings(subscriber)], sources=None) as broker, aiohttp.ClientSession() as s:
        spec = {"schedule": "* * * * * *", "data": {"dataset": "iris"}}
        async with s.put(f"{broker.url}/sources/ping/every-second", json=spec) as r:
            assert r.status == 200, await r.text()
        await subscriber.wait_for(lambda: len(subscriber.at("/ping")) >= 2, 10)
        async with s.delete(f"{broker.url}/sources/ping/every-second") as r:
            assert r.status == 204
        after = (await history(broker.url, type=PING_TYPE))["next"]
        later = await history(broker.url, type=PING_TYPE, after=after, wait="2.5")  # over two periods
        async with s.get(f"{broker.url}/sources/ping") as r:
            listed = await r.json()
    assert later["events"] == []
    assert listed == {"items": []}
    ticks = subscriber.at("/ping")
    assert ticks[0].event.get_data() == {"dataset": "iris"}
    assert ticks[0].event.get_subject() == "every-second"
    assert 0.7 <= ticks[1].at - ticks[0].at <= 1.5


async def test_ping_sources_are_kept_across_a_broker_restart(make_broker, subscriber):
    spec = {"schedule": "* * * * * *", "data": {"hi": 1}}
    async with (
        make_broker([], sources=None) as broker,
        aiohttp.ClientSession() as s,
        s.put(f"{broker.url}/sources/ping/kept", json=spec) as r,
    ):
        assert r.status == 200
    async with make_broker([pings(subscriber)], sources=None) as broker, aiohttp.ClientSession() as s:
        async with s.get(f"{broker.url}/sources/ping/kept") as r:
            assert await r.json() == {"name": "kept", "spec": spec}
        await subscriber.wait_for(lambda: subscriber.at("/ping"), 10)
    assert subscriber.at("/ping")[0].event.get_data() == {"hi": 1}


@pytest.mark.parametrize(
    ("name", "spec", "status", "reason"),
    [
        ("ok", {"schedule": "every minute"}, 400, "not a cron expression"),
        ("ok", {"schedule": "1 2 3"}, 400, "5 fields"),
        ("ok", {"schedule": "* * * * *", "sink": "x"}, 400, "sink"),
        ("Not_A_Name", {"schedule": "* * * * *"}, 400, "DNS label"),
        ("ok", "not an object", 400, "ping source ok"),
    ],
)
async def test_a_bad_ping_source_is_refused_naming_what_is_wrong(make_broker, name, spec, status, reason):
    async with make_broker([], sources=None) as broker, aiohttp.ClientSession() as s:
        async with s.put(f"{broker.url}/sources/ping/{name}", json=spec) as r:
            assert r.status == status
            assert reason in (await r.json())["error"]
        async with s.delete(f"{broker.url}/sources/ping/nothing-here") as r:
            assert r.status == 404
