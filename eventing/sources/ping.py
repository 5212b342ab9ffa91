"""A ping source like Knative's PingSource: a cron schedule (croniter; a 6th field is seconds) emits an event."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiohttp import web
from croniter import croniter

from eventing.events import new_event
from infra.errors import ConfigError

log = logging.getLogger(__name__)

PING_TYPE = "dev.knative.sources.ping"


class PingSource:
    """Publishes ``PING_TYPE`` (data: ``data`` as JSON, or text) at every tick of ``schedule``."""

    def __init__(self, name: str, schedule: str, data: Any = None, event_type: str = PING_TYPE):
        if not croniter.is_valid(schedule):
            raise ConfigError(f"ping schedule {schedule!r} is not a cron expression")
        self.name, self.schedule, self.data, self.event_type = name, schedule, data, event_type
        self._task: asyncio.Task | None = None

    def routes(self) -> list[web.RouteDef]:
        return []

    async def start(self, publish: Any) -> None:
        self._task = asyncio.create_task(self._run(publish), name=f"ping-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self, publish: Any) -> None:
        ticks = croniter(self.schedule, time.time())
        while True:
            at = ticks.get_next(float)
            await asyncio.sleep(max(0.0, at - time.time()))
            event = new_event(self.event_type, f"knflow/ping/{self.name}", self.data, subject=self.name)
            try:
                await publish(event)
            except Exception:
                log.exception("ping source %s could not publish", self.name)
