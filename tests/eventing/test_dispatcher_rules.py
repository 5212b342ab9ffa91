"""The dispatcher's rules, in process: it pins before it joins, retries the join and the log with its waits, delivers
one key's events in order one at a time and keys in parallel up to its capacity, acks only after delivery (or for an
event its filters do not take), and stops without acking what is in flight (``make mutate`` measures
``eventing/dispatcher.py`` with these)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from cloudevents.core.v1.event import CloudEvent

import eventing.dispatcher as dispatcher_module
from eventing.dispatcher import Dispatcher
from eventing.eventlog import Record
from eventing.triggers import Trigger
from infra.logs import current_runid

WAIT_S = 5.0


def _record(n: int, key: str | None, type: str = "t.one", runid: str | None = None) -> Record:
    attributes = {"specversion": "1.0", "id": f"e-{n}", "source": "/src", "type": type}
    if runid:
        attributes["runid"] = runid
    return Record(position=(0, n), key=key, event=CloudEvent(attributes, {"n": n}))


class FakeConsumer:
    """A consumer group in memory: ``feed`` hands records to the next ``fetch``; ``ready`` fails ``join_failures``
    times first; ``fetch`` raises ``fetch_failures`` times first."""

    def __init__(self, join_failures: int = 0, fetch_failures: int = 0) -> None:
        self.calls: list[str] = []
        self.fetches: list[tuple[int, float]] = []
        self.acked: list[int] = []
        self.acked_changed = asyncio.Event()
        self.batches: asyncio.Queue[list[Record]] = asyncio.Queue()
        self.join_failures, self.fetch_failures = join_failures, fetch_failures
        self.joining = asyncio.Event()
        self.joining.set()
        self.closed = False

    def feed(self, *records: Record) -> None:
        self.batches.put_nowait(list(records))

    async def pin(self) -> None:
        self.calls.append("pin")

    async def ready(self) -> None:
        self.calls.append("ready")
        await self.joining.wait()
        if self.join_failures:
            self.join_failures -= 1
            raise ConnectionError("group coordinator not available")

    async def fetch(self, max_records: int, timeout: float) -> list[Record]:
        self.fetches.append((max_records, timeout))
        if self.fetch_failures:
            self.fetch_failures -= 1
            raise ConnectionError("log unreachable")
        try:
            return await asyncio.wait_for(self.batches.get(), timeout)
        except TimeoutError:
            return []

    def ack(self, record: Record) -> None:
        self.acked.append(record.position[1])
        self.acked_changed.set()

    async def close(self) -> None:
        self.closed = True

    async def wait_acked(self, count: int) -> None:
        async def enough() -> None:
            while len(self.acked) < count:
                self.acked_changed.clear()
                await self.acked_changed.wait()

        await asyncio.wait_for(enough(), WAIT_S)


class FakeDeliverer:
    """Records each delivery as it starts and ends; ``hold(n)`` keeps event ``n`` in delivery until released;
    ``fail[n]`` makes its delivery raise that many times (bookkeeping that failed)."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.finished: list[int] = []
        self.runids: list[str | None] = []
        self.gates: dict[int, asyncio.Event] = {}
        self.fail: dict[int, int] = {}
        self.busy: dict[str, int] = {}
        self.most: dict[str, int] = {}
        self.changed = asyncio.Event()

    def hold(self, *numbers: int) -> None:
        for n in numbers:
            self.gates[n] = asyncio.Event()

    def release(self, n: int) -> None:
        self.gates[n].set()

    async def deliver(self, trigger: Trigger, event: CloudEvent) -> None:
        n = event.get_data()["n"]
        self.started.append(n)
        self.runids.append(current_runid.get())
        self.changed.set()
        if self.fail.get(n):
            self.fail[n] -= 1
            raise ConnectionError("the log is down")
        if n in self.gates:
            await self.gates[n].wait()
        self.finished.append(n)
        self.changed.set()

    async def until(self, check: Callable[[], bool]) -> None:
        async def wait() -> None:
            while not check():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), WAIT_S)


class Sleeps:
    """``asyncio`` as the dispatcher sees it, with ``sleep`` recorded and not waited (its waits are the rule)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> Sleeps:
    fake = Sleeps()
    monkeypatch.setattr(dispatcher_module, "asyncio", fake)
    return fake


def _dispatcher(consumer: FakeConsumer, deliverer: FakeDeliverer, **options: Any) -> Dispatcher:
    trigger = Trigger("t", "http://127.0.0.1:9/", **options.pop("trigger", {}))
    return Dispatcher(trigger, consumer, deliverer, **options)  # type: ignore[arg-type]  # the fakes hold the protocols


@contextlib.asynccontextmanager
async def running(consumer: FakeConsumer, deliverer: FakeDeliverer, **options: Any) -> AsyncIterator[Dispatcher]:
    """A started dispatcher over the fakes, stopped on leaving."""
    dispatcher = _dispatcher(consumer, deliverer, **options)
    await dispatcher.start()
    try:
        yield dispatcher
    finally:
        await dispatcher.stop()


@pytest.fixture
def consumer() -> FakeConsumer:
    return FakeConsumer()


@pytest.fixture
def deliverer() -> FakeDeliverer:
    return FakeDeliverer()


# -- start, join, stop ------------------------------------------------------------------------------------------------


async def test_the_start_is_pinned_before_the_group_joins_and_ready_tells_when_it_has() -> None:
    consumer, deliverer = FakeConsumer(), FakeDeliverer()
    consumer.joining.clear()
    dispatcher = _dispatcher(consumer, deliverer)
    await dispatcher.start()
    assert consumer.calls[0] == "pin"
    assert not dispatcher.ready and not await dispatcher.wait_ready(0.01)
    consumer.joining.set()
    assert await dispatcher.wait_ready(WAIT_S) and dispatcher.ready
    assert consumer.calls == ["pin", "ready"]
    await dispatcher.stop()


async def test_a_join_that_fails_is_retried_after_half_a_second_doubling_up_to_10(sleeps: Sleeps, caplog) -> None:
    consumer, deliverer = FakeConsumer(join_failures=7), FakeDeliverer()
    dispatcher = _dispatcher(consumer, deliverer)
    with caplog.at_level(logging.INFO, logger="eventing.dispatcher"):
        await dispatcher.start()
        assert await dispatcher.wait_ready(WAIT_S)
    assert sleeps.waits == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert consumer.calls.count("ready") == 8
    joins = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert joins[0] == "trigger t: consumer group not joined yet (group coordinator not available); retrying in 0.5s"
    assert "trigger t ready" in [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    await dispatcher.stop()


async def test_a_stopped_dispatcher_gives_up_joining() -> None:
    consumer, deliverer = FakeConsumer(), FakeDeliverer()
    consumer.joining.clear()
    dispatcher = _dispatcher(consumer, deliverer)
    await dispatcher.start()
    await asyncio.sleep(0)
    await asyncio.wait_for(dispatcher.stop(), WAIT_S)
    assert consumer.closed and not dispatcher.ready


async def test_the_log_is_read_256_records_at_a_time_waiting_up_to_1_s(
    consumer: FakeConsumer, deliverer: FakeDeliverer
) -> None:
    async with running(consumer, deliverer):
        consumer.feed(_record(1, "k"))
        await consumer.wait_acked(1)
        assert consumer.fetches[0] == (256, 1.0)


async def test_a_failed_read_of_the_log_is_logged_and_retried_after_1_s(
    deliverer: FakeDeliverer, sleeps: Sleeps, caplog
) -> None:
    consumer = FakeConsumer(fetch_failures=2)
    async with running(consumer, deliverer):
        consumer.feed(_record(1, "k"))
        await consumer.wait_acked(1)
    assert sleeps.waits[:2] == [1.0, 1.0]
    failures = [r for r in caplog.records if r.getMessage() == "trigger t: reading the log failed; retrying"]
    assert len(failures) == 2 and failures[0].exc_info is not None


# -- order, parallelism, capacity -------------------------------------------------------------------------------------


async def test_one_keys_events_are_delivered_in_log_order_one_at_a_time(
    consumer: FakeConsumer, deliverer: FakeDeliverer
) -> None:
    deliverer.hold(1, 2)
    async with running(consumer, deliverer):
        consumer.feed(_record(1, "k"), _record(2, "k"), _record(3, "k"))
        await deliverer.until(lambda: deliverer.started == [1])
        deliverer.release(1)
        await deliverer.until(lambda: deliverer.started == [1, 2])
        assert consumer.acked == [1]
        deliverer.release(2)
        await consumer.wait_acked(3)
        assert deliverer.started == deliverer.finished == [1, 2, 3] and consumer.acked == [1, 2, 3]


async def test_different_keys_are_delivered_in_parallel(consumer: FakeConsumer, deliverer: FakeDeliverer) -> None:
    deliverer.hold(1)
    async with running(consumer, deliverer):
        consumer.feed(_record(1, "a"), _record(2, "b"), _record(3, "a"))
        await consumer.wait_acked(1)
        assert consumer.acked == [2] and deliverer.started == [1, 2]  # b passed a's held event; a's next waits
        deliverer.release(1)
        await consumer.wait_acked(3)
        assert deliverer.started == [1, 2, 3]


async def test_events_without_a_key_each_go_their_own_way(consumer: FakeConsumer, deliverer: FakeDeliverer) -> None:
    deliverer.hold(1)
    async with running(consumer, deliverer):
        consumer.feed(_record(1, None), _record(2, None), _record(3, ""))
        await consumer.wait_acked(2)
        assert sorted(consumer.acked) == [2, 3]
        deliverer.release(1)
        await consumer.wait_acked(3)


async def test_a_key_whose_lane_emptied_starts_a_new_one(consumer: FakeConsumer, deliverer: FakeDeliverer) -> None:
    async with running(consumer, deliverer):
        consumer.feed(_record(1, "k"))
        await consumer.wait_acked(1)
        consumer.feed(_record(2, "k"))
        await consumer.wait_acked(2)
        assert deliverer.finished == [1, 2]


@pytest.mark.parametrize("capacity", [1, 2])
async def test_no_more_events_are_in_flight_than_the_capacity(
    consumer: FakeConsumer, deliverer: FakeDeliverer, capacity: int
) -> None:
    deliverer.hold(1, 2, 3)
    async with running(consumer, deliverer, max_inflight=capacity):
        consumer.feed(_record(1, "a"), _record(2, "b"), _record(3, "c"))
        await deliverer.until(lambda: len(deliverer.started) == capacity)
        for _ in range(5):
            await asyncio.sleep(0)  # give a third delivery every chance to start: it must not
        assert deliverer.started == [1, 2, 3][:capacity]
        deliverer.release(1)
        await deliverer.until(lambda: len(deliverer.started) == capacity + 1)
        for n in (2, 3):
            deliverer.release(n)
        await consumer.wait_acked(3)


async def test_the_default_capacity_is_256_events_in_flight(consumer: FakeConsumer, deliverer: FakeDeliverer) -> None:
    deliverer.hold(*range(258))
    async with running(consumer, deliverer):
        consumer.feed(*[_record(n, f"k{n}") for n in range(258)])
        await deliverer.until(lambda: len(deliverer.started) == 256)
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(deliverer.started) == 256
        for n in range(258):
            deliverer.release(n)
        await consumer.wait_acked(258)


# -- filters and acks -------------------------------------------------------------------------------------------------


async def test_an_event_the_filters_do_not_take_is_acked_undelivered_and_frees_its_place(
    consumer: FakeConsumer, deliverer: FakeDeliverer
) -> None:
    async with running(consumer, deliverer, max_inflight=1, trigger={"filter": {"type": "t.one"}}):
        consumer.feed(_record(1, "a", type="t.other"), _record(2, "a", type="t.one"), _record(3, "b", type="t.other"))
        await consumer.wait_acked(3)
        assert consumer.acked == [1, 2, 3] and deliverer.started == [2]


async def test_the_filters_dialect_decides_too(consumer: FakeConsumer, deliverer: FakeDeliverer) -> None:
    async with running(consumer, deliverer, trigger={"filters": [{"prefix": {"type": "t.o"}}]}):
        consumer.feed(_record(1, "a", type="t.one"), _record(2, "a", type="x.one"))
        await consumer.wait_acked(2)
        assert deliverer.started == [1]


async def test_an_event_is_acked_only_after_its_delivery(consumer: FakeConsumer, deliverer: FakeDeliverer) -> None:
    deliverer.hold(1)
    async with running(consumer, deliverer):
        consumer.feed(_record(1, "k"))
        await deliverer.until(lambda: deliverer.started == [1])
        assert consumer.acked == []
        deliverer.release(1)
        await consumer.wait_acked(1)


async def test_a_delivery_whose_bookkeeping_fails_is_not_acked_and_is_delivered_again_after_1_s(
    consumer: FakeConsumer, deliverer: FakeDeliverer, sleeps: Sleeps, caplog
) -> None:
    deliverer.fail[1] = 2
    async with running(consumer, deliverer):
        consumer.feed(_record(1, "k"), _record(2, "k"))
        await consumer.wait_acked(2)
        assert deliverer.started == [1, 1, 1, 2] and consumer.acked == [1, 2]
        assert sleeps.waits.count(1.0) == 2
        failures = [r for r in caplog.records if r.getMessage() == "trigger t: delivery bookkeeping failed"]
        assert len(failures) == 2 and failures[0].exc_info is not None


async def test_a_delivery_is_logged_with_its_events_run(consumer: FakeConsumer, deliverer: FakeDeliverer) -> None:
    async with running(consumer, deliverer):
        consumer.feed(_record(1, "k", runid="run-7"), _record(2, "j"))
        await consumer.wait_acked(2)
        assert sorted(deliverer.runids, key=str) == [None, "run-7"]  # each event's own run, none for one without
        assert current_runid.get() is None


async def test_stop_leaves_what_is_in_flight_unacked_and_closes_the_consumer() -> None:
    consumer, deliverer = FakeConsumer(), FakeDeliverer()
    deliverer.hold(1)
    dispatcher = _dispatcher(consumer, deliverer)
    await dispatcher.start()
    consumer.feed(_record(1, "k"), _record(2, "k"))
    await deliverer.until(lambda: deliverer.started == [1])
    await asyncio.wait_for(dispatcher.stop(), WAIT_S)
    deliverer.release(1)
    await asyncio.sleep(0)
    assert consumer.acked == [] and deliverer.started == [1] and consumer.closed


class StopDuringFetch(FakeConsumer):
    """A consumer whose fetch returns records just as the dispatcher is stopped (its cancellation lost)."""

    def __init__(self) -> None:
        super().__init__()
        self.fetching = asyncio.Event()

    async def fetch(self, max_records: int, timeout: float) -> list[Record]:
        self.fetching.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(WAIT_S)
        return [_record(1, "k")]


async def test_records_read_as_the_dispatcher_stops_are_neither_delivered_nor_acked() -> None:
    consumer, deliverer = StopDuringFetch(), FakeDeliverer()
    dispatcher = _dispatcher(consumer, deliverer)
    await dispatcher.start()
    await asyncio.wait_for(consumer.fetching.wait(), WAIT_S)
    await asyncio.wait_for(dispatcher.stop(), WAIT_S)
    await asyncio.sleep(0)
    assert deliverer.started == [] and consumer.acked == []


async def test_a_dispatcher_stopped_before_it_started_only_closes_its_consumer(
    consumer: FakeConsumer, deliverer: FakeDeliverer
) -> None:
    await asyncio.wait_for(_dispatcher(consumer, deliverer).stop(), WAIT_S)
    assert consumer.closed and consumer.calls == []


async def test_the_loop_runs_as_a_task_named_for_its_trigger(consumer: FakeConsumer, deliverer: FakeDeliverer) -> None:
    async with running(consumer, deliverer):
        assert "trigger-t" in {task.get_name() for task in asyncio.all_tasks()}


class FailingAck(FakeConsumer):
    """A consumer whose ``ack`` fails: the task that acks dies of it."""

    def ack(self, record: Record) -> None:
        super().ack(record)
        raise RuntimeError("commit failed")


async def test_stop_completes_and_closes_the_consumer_though_a_task_died_of_an_error(deliverer: FakeDeliverer) -> None:
    consumer = FailingAck()
    dispatcher = _dispatcher(consumer, deliverer, trigger={"filter": {"type": "t.one"}})
    await dispatcher.start()
    consumer.feed(_record(1, "a"), _record(2, "b", type="t.other"))  # the lane's task and the loop both ack
    await consumer.wait_acked(2)
    await asyncio.wait_for(dispatcher.stop(), WAIT_S)
    assert consumer.closed


async def test_a_lanes_task_ends_cleanly_once_its_lane_is_empty_and_is_forgotten(
    consumer: FakeConsumer, deliverer: FakeDeliverer
) -> None:
    deliverer.hold(1)
    async with running(consumer, deliverer) as dispatcher:
        consumer.feed(_record(1, "k"), _record(2, "k"))
        await deliverer.until(lambda: deliverer.started == [1])
        lanes = list(dispatcher._tasks)
        assert len(lanes) == 1
        deliverer.release(1)
        await asyncio.wait_for(asyncio.gather(*lanes), WAIT_S)  # no IndexError from an empty lane
        assert consumer.acked == [1, 2]
        await asyncio.sleep(0)  # the done callback runs on the next turn of the loop
        assert not dispatcher._tasks
