"""Trigger/delivery spec parsing, filter semantics, the publisher client, retention, and the broker CLI entry."""

from __future__ import annotations

import asyncio
import time

import pytest

from eventing.client import publish, publish_async
from eventing.events import new_event
from eventing.filters import matches
from eventing.log_embedded import EmbeddedEventLog
from eventing.triggers import DeliverySpec, Trigger
from infra.errors import InvalidRequest, NotFound


@pytest.fixture
def backend() -> str:
    return "embedded"


def test_backoff_schedules_follow_iso8601_delays():
    exp = DeliverySpec(retry=3, backoff_policy="exponential", backoff_delay="PT0.5S")
    assert [exp.backoff(n) for n in range(3)] == [0.5, 1.0, 2.0]
    lin = DeliverySpec(retry=3, backoff_policy="linear", backoff_delay="PT0.5S")
    assert [lin.backoff(n) for n in range(3)] == [0.5, 1.0, 1.5]
    with pytest.raises(InvalidRequest):
        DeliverySpec(backoff_policy="fibonacci")


def test_trigger_spec_round_trips_in_knative_shape():
    spec = {
        "filter": {"attributes": {"type": "dev.knflow.data.arrived"}},
        "filters": [{"any": [{"prefix": {"type": "dev.knflow."}}, {"not": {"exact": {"source": "x"}}}]}],
        "subscriber": {"uri": "http://127.0.0.1:8181/ingest"},
        "delivery": {
            "retry": 3,
            "backoffPolicy": "exponential",
            "backoffDelay": "PT0.2S",
            "deadLetterSink": {"uri": "http://127.0.0.1:9/dls"},
            "timeout": "PT5S",
        },
    }
    trigger = Trigger.from_spec("ingest", spec)
    assert trigger.delivery.retry == 3 and trigger.delivery.timeout == 5.0
    assert Trigger.from_spec("ingest", trigger.to_spec()) == trigger
    for bad in (
        {"subscriber": {"uri": "ftp://x"}},
        {"subscriber": {}},
        {"subscriber": {"uri": "http://x"}, "filters": [{"regex": {"type": "x"}}]},
        {"subscriber": {"uri": "http://x"}, "filters": [{"prefix": {"type": ""}}]},
    ):
        with pytest.raises(InvalidRequest):
            Trigger.from_spec("t", bad)
    with pytest.raises(InvalidRequest):
        Trigger("Bad_Name", "http://x")


def test_filter_semantics_on_extensions_and_missing_attributes():
    event = new_event("a.b.c", "src/1", subject="raw/x.csv", extensions={"tenant": "t1"})
    assert matches(event, {"tenant": "t1", "type": "a.b.c"}, None)
    assert not matches(event, {"tenant": "T1"}, None)
    assert not matches(event, {"missing": ""}, None)  # an absent attribute never matches
    assert matches(event, {"type": "zzz"}, [{"suffix": {"subject": ".csv"}}])  # filters wins
    assert not matches(event, None, [{"all": [{"prefix": {"type": "a."}}, {"exact": {"tenant": "t2"}}]}])
    assert matches(event, None, [{"not": {"prefix": {"missing": "x"}}}])
    assert matches(event, None, None)


async def test_client_publishes_sync_and_async(make_broker):
    async with make_broker([]) as broker:
        await asyncio.get_running_loop().run_in_executor(None, publish, broker.url + "/", new_event("c.sync", "t"))
        await publish_async(broker.url + "/", new_event("c.async", "t"))
        with pytest.raises(NotFound, match=r"refused the event \(404\)"):  # no broker there: error_from_answer's 404
            await publish_async(broker.url + "/default/nothere/x", new_event("c.async", "t"))
        events, _ = await broker.log.history(after=None, limit=10)
        assert [e.get_type() for _, e in events] == ["c.sync", "c.async"]


async def test_retention_deletes_old_events_only(tmp_path):
    log = EmbeddedEventLog(tmp_path / "ev", retention_hours=1)
    await log.start()
    try:
        await log.append([new_event("old", "t") for _ in range(5)])
        assert await log.compact(now=time.time() + 2 * 3600) == 5
        await log.append([new_event("new", "t")])
        assert await log.compact() == 0
        events, _ = await log.history(after=None, limit=10)
        assert [e.get_type() for _, e in events] == ["new"]
    finally:
        await log.close()


def test_fast_wire_codecs_agree_with_the_reference_bindings():
    from eventing import bindings, wire

    events = [
        new_event("a.b", "src", {"x": [1, 2], "s": "é"}, subject="raw/x y.csv", extensions={"tenant": "t1"}),
        new_event("a.b", "src", None),
        new_event("a.b", "src 100%", "plain text", datacontenttype="text/plain"),
        new_event("a.b", "src", b"\x00\x01", datacontenttype="application/octet-stream"),
        new_event("a.b", "ünïcode-source", {"k": 1}),
    ]
    for event in events:
        headers, body = wire.to_http_binary(event)
        ref = bindings.from_http(*bindings.to_http_binary(event))
        for got in (
            wire.from_http(headers, body),
            bindings.from_http(headers, body),
            wire.from_json(bindings.to_json(event)),
        ):
            assert got.get_attributes() == ref.get_attributes() and got.get_data() == ref.get_data()
    with pytest.raises(InvalidRequest):
        wire.from_http({"ce-specversion": "1.0", "ce-id": "1", "ce-source": "s"}, b"")  # no type
    with pytest.raises(InvalidRequest):
        wire.from_http({"ce-specversion": "1.0", "ce-id": "1", "ce-source": "s", "ce-type": "t"}, b"{not json")
    batch = b"[" + b",".join(bindings.to_json(e) for e in events) + b"]"
    for got, ref in zip(wire.from_batch(batch), bindings.from_batch(batch), strict=True):
        assert got.get_attributes() == ref.get_attributes() and got.get_data() == ref.get_data()
    assert [e.get_id() for e in wire.from_batch(batch)] == [e.get_id() for e in events]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "batch is not valid JSON"),
        (b'{"specversion": "1.0"}', "JSON array"),
        (b'[{"specversion": "1.0", "id": "1", "source": "s", "type": "t"}, 3]', "batch item 1"),
        (b'[{"specversion": "1.0", "id": "1", "source": "s"}]', "batch item 0: .*missing required"),
    ],
)
def test_a_batch_with_an_invalid_event_is_refused_naming_it(body: bytes, reason: str) -> None:
    from eventing import bindings, wire

    for codec in (bindings, wire):
        with pytest.raises(InvalidRequest, match=reason):
            codec.from_batch(body)


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_putting_an_unchanged_trigger_does_not_wait_for_deliveries_in_flight(make_broker, subscriber):
    from aiohttp import web

    release = asyncio.Event()

    async def slow(_event, _n):
        await release.wait()
        return web.Response(status=204)

    trigger = Trigger("slow", subscriber.on("/slow", slow), delivery=DeliverySpec(timeout="PT60S"))
    async with make_broker([trigger]) as broker:
        await broker.publish(new_event("t.slow", "/tests", {"n": 1}))
        await subscriber.wait_for(lambda: len(subscriber.at("/slow")) == 1)
        started = time.monotonic()
        await broker.set_trigger(Trigger.from_spec("slow", trigger.to_spec()))  # what a restarted platform does
        assert time.monotonic() - started < 1.0
        release.set()
        # the delivery in flight was left alone: not cancelled and sent again by a new dispatcher
        with pytest.raises(AssertionError, match="timed out"):
            await subscriber.wait_for(lambda: len(subscriber.at("/slow")) > 1, timeout=1.5)


@pytest.mark.parametrize(
    ("expression", "value", "taken"),
    [
        ({"prefix": {"subject": "raw/"}}, "raw/d.csv", True),
        ({"prefix": {"subject": "raw/"}}, "x/raw/d.csv", False),  # the prefix must be at the start
        ({"prefix": {"subject": "raw/"}}, "raw", False),
        ({"suffix": {"subject": ".csv"}}, "raw/d.csv", True),
        ({"suffix": {"subject": ".csv"}}, "raw/d.csv.bak", False),  # the suffix must be at the end
        ({"suffix": {"subject": ".csv"}}, "csv", False),
        ({"exact": {"subject": "raw/d.csv"}}, "raw/d.csv ", False),
        ({"exact": {"subject": "raw/d.csv"}}, "RAW/d.csv", False),  # case-sensitive
    ],
)
def test_prefix_suffix_and_exact_match_only_where_they_say(expression: dict, value: str, taken: bool) -> None:
    event = new_event("dev.test.x", "/t", {}, subject=value)
    assert matches(event, None, [expression]) is taken
    assert matches(event, None, [{"not": expression}]) is not taken
