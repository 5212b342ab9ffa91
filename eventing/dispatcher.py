"""One trigger's delivery loop: read its consumer group, filter, deliver per partition-key lane, commit.

Events of one partition key (the ``partitionkey`` extension, else the ``runid``) are delivered to
the trigger in log order, one at a time (a lane per key); different keys proceed in parallel up
to ``max_inflight`` events. An event is acked (its offset committed) only after delivery succeeded
or was dead-lettered, so delivery is at-least-once. Each trigger has its own loop, so a subscriber
that is down delays only its trigger. A trigger is *ready* once its consumer group has joined and
is positioned; its starting position is fixed before that (``Consumer.pin``), so nothing appended
while it joins is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from eventing.delivery import Deliverer
from eventing.eventlog import Consumer, Record
from eventing.events import runid_of
from eventing.filters import matches
from eventing.triggers import Trigger
from infra.logs import bound_runid

log = logging.getLogger(__name__)


class Dispatcher:
    """Runs ``trigger`` over ``consumer`` until ``stop``."""

    def __init__(self, trigger: Trigger, consumer: Consumer, deliverer: Deliverer, max_inflight: int = 256):
        self.trigger, self.consumer, self.deliverer = trigger, consumer, deliverer
        self._capacity = asyncio.Semaphore(max_inflight)
        self._lanes: dict[str, deque[Record]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._main: asyncio.Task | None = None
        self._stopping = False
        self._ready = asyncio.Event()

    async def start(self) -> None:
        """Fix the group's starting position (every event appended after this returns is delivered), then
        join and run in the background; ``ready`` tells when the group has joined."""
        await self.consumer.pin()
        self._main = asyncio.create_task(self._run(), name=f"trigger-{self.trigger.name}")

    @property
    def ready(self) -> bool:
        """Whether the consumer group has joined and is positioned."""
        return self._ready.is_set()

    async def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for ``ready``; whether it is."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout)
        return self.ready

    async def _join(self) -> None:
        delay = 0.5
        while not self._stopping:
            try:
                await self.consumer.ready()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "trigger %s: consumer group not joined yet (%s); retrying in %.1fs", self.trigger.name, exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            self._ready.set()
            log.info("trigger %s ready", self.trigger.name)
            return

    async def stop(self) -> None:
        """Stop delivering; what is in flight is redelivered by the next dispatcher of this group.

        Cancelling alone is not enough on Python 3.11: ``asyncio.wait_for`` loses a cancellation that
        arrives as its inner wait completes, and the loop would go on; the flag ends it regardless.
        """
        self._stopping = True
        tasks = [t for t in (self._main, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.consumer.close()

    async def _run(self) -> None:
        await self._join()
        while not self._stopping:
            try:
                records = await self.consumer.fetch(max_records=256, timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("trigger %s: reading the log failed; retrying", self.trigger.name)
                await asyncio.sleep(1.0)
                continue
            if self._stopping:
                return  # not acked: the next dispatcher of this group delivers them
            for record in records:
                await self._capacity.acquire()
                self._route(record)

    def _route(self, record: Record) -> None:
        if not matches(record.event, self.trigger.filter, self.trigger.filters):
            self.consumer.ack(record)
            self._capacity.release()
            return
        key = record.key or f"id:{record.event.get_id()}"
        lane = self._lanes.get(key)
        if lane is not None:
            lane.append(record)
            return
        self._lanes[key] = deque([record])
        task = asyncio.create_task(self._drain(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, key: str) -> None:
        lane = self._lanes[key]
        try:
            while lane and not self._stopping:
                record = lane[0]
                with bound_runid(runid_of(record.event)):
                    try:
                        await self.deliverer.deliver(self.trigger, record.event)
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        # publishing the reply or the failure report failed (the log is down): do not ack,
                        # so the event is delivered again after a restart
                        log.exception("trigger %s: delivery bookkeeping failed", self.trigger.name)
                        await asyncio.sleep(1.0)
                        continue
                lane.popleft()
                self.consumer.ack(record)
                self._capacity.release()
        finally:
            if not lane:
                self._lanes.pop(key, None)
