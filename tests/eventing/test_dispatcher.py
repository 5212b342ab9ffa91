"""A trigger's dispatcher stops even when the log reader swallows its cancellation."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from eventing.dispatcher import Dispatcher
from eventing.eventlog import Record
from eventing.triggers import Trigger
from tests.eventually import eventually


class SwallowingConsumer:
    """A consumer whose fetch eats cancellation, as ``asyncio.wait_for`` on Python 3.11 can when the
    queue it waits on gets an item at the moment of the cancel."""

    def __init__(self) -> None:
        self.closed = False
        self.fetching = False
        self.acked: list[Record] = []

    async def pin(self) -> None:
        return None

    async def ready(self) -> None:
        return None

    async def fetch(self, max_records: int, timeout: float) -> list[Record]:
        self.fetching = True
        with contextlib.suppress(asyncio.CancelledError):  # the cancellation is lost here
            await asyncio.sleep(timeout)  # a fetch that finds nothing lasts its timeout
        return []

    def ack(self, record: Record) -> None:
        self.acked.append(record)

    async def close(self) -> None:
        self.closed = True


@pytest.mark.timeout(20)
async def test_stop_ends_the_loop_even_if_a_cancellation_is_lost() -> None:
    consumer = SwallowingConsumer()
    dispatcher = Dispatcher(Trigger("t", "http://127.0.0.1:9/"), consumer, deliverer=None)  # type: ignore[arg-type]
    await dispatcher.start()
    await eventually(lambda: consumer.fetching, 5, "the loop to be fetching")
    await asyncio.wait_for(dispatcher.stop(), 5)
    assert consumer.closed
