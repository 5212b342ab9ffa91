"""The ``EventLog`` contract (``eventing/eventlog.py``), proven once per backend: the embedded SQLite log and the
Kafka log on the session's real tansu broker.

``EventLogContract`` states what every log promises; a backend's test class only says how to open one (the same
log each time it is called, so a test can close it and open it again).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from cloudevents.core.v1.event import CloudEvent

from eventing.eventlog import Consumer, EventLog, Record
from eventing.events import new_event
from eventing.log_embedded import EmbeddedEventLog
from eventing.log_kafka import KafkaEventLog
from eventing.triggers import EARLIEST
from infra.errors import InvalidRequest, Unavailable
from infra.localservices import LocalService, free_port
from infra.settings import parse_broker_url

Opener = Callable[[], Awaitable[EventLog]]
_topics = itertools.count()


def events(n: int, runid: str = "run-1", start: int = 0, extensions: dict | None = None) -> list[CloudEvent]:
    """``n`` events of one run numbered from ``start`` (data ``{"n": i}``)."""
    return [
        new_event("t.contract", "/contract", {"n": i}, runid=runid, extensions=extensions)
        for i in range(start, start + n)
    ]


def numbers(records: list[Record]) -> list[int]:
    return [r.event.get_data()["n"] for r in records]


async def fetch_all(consumer: Consumer, count: int, timeout: float = 30.0) -> list[Record]:
    """Fetch until ``count`` records came (a Kafka fetch may answer a part), or fail naming how many did."""
    got: list[Record] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        left = deadline - time.monotonic()
        assert left > 0, f"{len(got)} of {count} records fetched in {timeout}s: {numbers(got)}"
        got += await consumer.fetch(count - len(got), timeout=min(left, 1.0))
    return got


async def nothing_more(consumer: Consumer, wait: float = 1.0) -> None:
    extra = await consumer.fetch(100, timeout=wait)
    assert extra == [], f"records fetched that should not be: {numbers(extra)}"


async def read_history(log: EventLog, **filters: str) -> list[CloudEvent]:
    """The whole history, paged 3 at a time by cursor."""
    out: list[CloudEvent] = []
    after: str | None = None
    for _ in range(100):
        page, after = await log.history(after=after, limit=3, **filters)
        if not page:
            return out
        out += [event for _, event in page]
    raise AssertionError("the history did not end after 100 pages")


class EventLogContract:
    """What every ``EventLog`` promises. Subclasses override ``opener``: an async callable opening (``start``ed)
    the one log of the test, anew on each call."""

    @pytest.fixture
    def opener(self) -> Opener:
        raise NotImplementedError("a backend's test class says how to open its log")

    @pytest.fixture
    async def open_log(self, opener: Opener) -> AsyncIterator[Opener]:
        """``opener`` with every log it opened closed at the end of the test."""
        opened: list[EventLog] = []

        async def open_one() -> EventLog:
            log = await opener()
            opened.append(log)
            return log

        yield open_one
        for log in opened:
            await log.close()

    # -- append and history ----------------------------------------------------------------------------------------

    async def test_appended_events_read_back_as_they_were_sent(self, open_log: Opener) -> None:
        log = await open_log()
        sent = [
            new_event("t.json", "/contract", {"k": [1, 2.5, None], "s": "é ✓"}, runid="run-a", subject="a/b c"),
            new_event("t.text", "/contract", "plain text", runid="run-a", datacontenttype="text/plain"),
            new_event("t.bytes", "/contract", b"\x00\xff", runid="run-a", datacontenttype="application/octet-stream"),
            new_event("t.none", "/contract", None, runid="run-a", extensions={"partitionkey": "run-a/x", "mode": "m"}),
        ]
        await log.append(sent)
        got = {e.get_id(): e for e in await read_history(log, runid="run-a")}  # two keys: no order between them
        assert [got[e.get_id()].get_attributes() for e in sent] == [e.get_attributes() for e in sent]
        assert [got[e.get_id()].get_data() for e in sent] == [e.get_data() for e in sent]

    async def test_history_pages_by_cursor_in_append_order_and_filters_by_run_and_type(self, open_log: Opener) -> None:
        log = await open_log()
        first, second = events(7, runid="run-h1"), events(4, runid="run-h2")
        await log.append(first[:3])
        await log.append(second)
        await log.append(first[3:])
        mine = await read_history(log, runid="run-h1")
        assert [e.get_id() for e in mine] == [e.get_id() for e in first]
        typed = await read_history(log, type="t.contract")
        assert {e.get_id() for e in typed} == {e.get_id() for e in first + second}
        assert await read_history(log, type="t.other") == []

    async def test_the_next_cursor_of_the_last_page_sees_only_later_events(self, open_log: Opener) -> None:
        log = await open_log()
        await log.append(events(3, runid="run-c"))
        page, after = await log.history(after=None, limit=100, runid="run-c")
        assert len(page) == 3
        assert (await log.history(after=after, limit=100, runid="run-c"))[0] == []
        later = events(2, runid="run-c", start=3)
        await log.append(later)
        page, _ = await log.history(after=after, limit=100, runid="run-c")
        assert [e.get_id() for _, e in page] == [e.get_id() for e in later]

    async def test_a_cursor_inside_one_append_reads_the_rest_of_it_after_a_reopen(self, open_log: Opener) -> None:
        log = await open_log()
        sent = events(4, runid="run-b")
        await log.append(sent)  # one append: on Kafka, one record batch
        page, after = await log.history(after=None, limit=1, runid="run-b")
        assert [e.get_id() for _, e in page] == [sent[0].get_id()]
        await log.close()
        again = await open_log()
        rest, _ = await again.history(after=after, limit=10, runid="run-b")
        assert [e.get_id() for _, e in rest] == [e.get_id() for e in sent[1:]]

    async def test_an_empty_log_has_an_empty_history_with_a_usable_cursor(self, open_log: Opener) -> None:
        log = await open_log()
        page, after = await log.history(after=None, limit=10)
        assert page == []
        await log.append(events(1, runid="run-e"))
        page, _ = await log.history(after=after, limit=10)
        assert [e.get_extension("runid") for _, e in page] == ["run-e"]

    @pytest.mark.parametrize("cursor", ["not-a-cursor", "1:x", "-", "\uff11", "0:-1", "\uff10:\uff11"])
    async def test_a_cursor_the_log_did_not_give_is_refused_as_invalid(self, open_log: Opener, cursor: str) -> None:
        log = await open_log()
        with pytest.raises(InvalidRequest, match="cursor"):
            await log.history(after=cursor, limit=10)

    async def test_appending_nothing_stores_nothing(self, open_log: Opener) -> None:
        log = await open_log()
        await log.append([])
        assert (await log.history(after=None, limit=10))[0] == []

    async def test_appended_events_survive_closing_and_reopening_the_log(self, open_log: Opener) -> None:
        log = await open_log()
        sent = events(3, runid="run-d")
        await log.append(sent)
        await log.close()
        again = await open_log()
        assert [e.get_id() for e in await read_history(again, runid="run-d")] == [e.get_id() for e in sent]

    async def test_wait_for_append_returns_on_an_append_and_after_its_timeout_without_one(
        self, open_log: Opener
    ) -> None:
        import asyncio

        log = await open_log()
        started = time.monotonic()
        await log.wait_for_append(0.2)
        assert 0.15 <= time.monotonic() - started < 5
        waiter = asyncio.create_task(log.wait_for_append(30))
        await asyncio.sleep(0)  # the waiter is waiting before the append
        await log.append(events(1))
        await asyncio.wait_for(waiter, 5)

    # -- consumers -------------------------------------------------------------------------------------------------

    async def test_a_new_group_starts_after_what_the_log_holds_when_it_is_pinned(self, open_log: Opener) -> None:
        log = await open_log()
        await log.append(events(2, runid="run-old"))
        consumer = log.consumer("latest")
        await consumer.pin()
        await log.append(events(3))  # after pin, before the join: delivered however long ready() takes
        await consumer.ready()
        got = await fetch_all(consumer, 3)
        assert numbers(got) == [0, 1, 2]
        await nothing_more(consumer)
        await consumer.close()

    async def test_a_new_group_at_earliest_starts_at_the_first_event_the_log_holds(self, open_log: Opener) -> None:
        log = await open_log()
        await log.append(events(3))
        consumer = log.consumer("early", initial_offset=EARLIEST)
        await consumer.ready()
        assert numbers(await fetch_all(consumer, 3)) == [0, 1, 2]
        await log.append(events(2, start=3))
        assert numbers(await fetch_all(consumer, 2)) == [3, 4]
        await consumer.close()

    async def test_records_of_one_key_come_in_append_order_with_their_key_and_distinct_positions(
        self, open_log: Opener
    ) -> None:
        log = await open_log()
        consumer = log.consumer("keys")
        await consumer.ready()
        keyed = [events(5, runid=f"run-{k}") for k in range(4)]
        trial = events(3, runid="run-0", extensions={"partitionkey": "run-0/trial-1"})
        for batch in zip(*keyed, strict=True):  # keys interleaved in the log
            await log.append(list(batch))
        await log.append(trial)
        got = await fetch_all(consumer, 23)
        assert len({r.position for r in got}) == 23
        expected = {f"run-{k}": [0, 1, 2, 3, 4] for k in range(4)} | {"run-0/trial-1": [0, 1, 2]}
        assert {key: numbers([r for r in got if r.key == key]) for key in expected} == expected
        await consumer.close()

    async def test_a_fetch_with_nothing_new_returns_nothing_after_its_timeout(self, open_log: Opener) -> None:
        log = await open_log()
        consumer = log.consumer("idle")
        await consumer.ready()
        started = time.monotonic()
        assert await consumer.fetch(10, timeout=0.3) == []
        assert time.monotonic() - started >= 0.25
        await consumer.close()

    async def test_acked_records_are_not_redelivered_after_a_restart_and_the_rest_are(self, open_log: Opener) -> None:
        log = await open_log()
        consumer = log.consumer("resume")
        await consumer.ready()
        await log.append(events(5))
        got = await fetch_all(consumer, 5)
        for record in got[:3]:
            consumer.ack(record)
        await consumer.close()
        await log.close()

        again = await open_log()
        resumed = again.consumer("resume", initial_offset=EARLIEST)  # a known group keeps its own position
        await resumed.ready()
        assert numbers(await fetch_all(resumed, 2)) == [3, 4]
        await nothing_more(resumed)
        await resumed.close()

    async def test_lag_counts_events_not_acked_yet(self, open_log: Opener) -> None:
        log = await open_log()
        consumer = log.consumer("lag")
        assert consumer.lag() == 0  # not pinned yet
        await consumer.ready()
        await log.append(events(4))
        got = await fetch_all(consumer, 4)
        assert consumer.lag() == 4
        for record in got:
            consumer.ack(record)
        assert consumer.lag() == 0
        await consumer.close()

    async def test_groups_read_independently(self, open_log: Opener) -> None:
        log = await open_log()
        one, two = log.consumer("one"), log.consumer("two")
        await one.ready()
        await two.ready()
        await log.append(events(3))
        first = await fetch_all(one, 3)
        for record in first:
            one.ack(record)
        assert numbers(await fetch_all(two, 3)) == [0, 1, 2]
        await one.close()
        await two.close()

    async def test_a_dropped_group_starts_afresh_at_its_initial_offset(self, open_log: Opener) -> None:
        log = await open_log()
        consumer = log.consumer("dropped", initial_offset=EARLIEST)
        await consumer.ready()
        await log.append(events(2))
        for record in await fetch_all(consumer, 2):
            consumer.ack(record)
        await consumer.close()
        await log.drop_group("dropped")
        again = log.consumer("dropped", initial_offset=EARLIEST)
        await again.ready()
        assert numbers(await fetch_all(again, 2)) == [0, 1]
        await again.close()


class TestEmbeddedEventLog(EventLogContract):
    @pytest.fixture
    def opener(self, tmp_path: Path) -> Opener:
        async def open_embedded() -> EventLog:
            log = EmbeddedEventLog(tmp_path / "events")
            await log.start()
            return log

        return open_embedded


class TestKafkaEventLog(EventLogContract):
    @pytest.fixture
    def opener(self, kafka_server: LocalService) -> Opener:
        location = parse_broker_url(f"kafka://{kafka_server.url}?topic=contract-{next(_topics)}-{time.time_ns()}")

        async def open_kafka() -> EventLog:
            log = KafkaEventLog(location)
            await log.start()
            return log

        return open_kafka


async def test_a_kafka_log_without_a_broker_is_unavailable() -> None:
    log = KafkaEventLog(parse_broker_url(f"kafka://127.0.0.1:{free_port()}"))
    with pytest.raises(Unavailable, match="not reachable"):
        await log.start()
