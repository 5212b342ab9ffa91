"""The broker's event history as the dashboard sees it: read incrementally from ``GET /events``, grouped by run.

The dashboard keeps what it has read (up to ``max_events``, oldest runs dropped first) and asks the
broker only for events after its cursor, so a refresh costs what is new.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from urllib.parse import urlencode

import orjson
from cloudevents.core.v1.event import CloudEvent

from eventing.bindings import from_json
from eventing.events import STEP_FAILED, runid_of
from functions.contract import data_of
from infra.asyncclient import AsyncClient
from infra.errors import InvalidRequest, KnflowError, NotFound
from knflow.dashboard.runs import REPLAY_OF

log = logging.getLogger(__name__)
PAGE = 1000


class EventHistory:
    """Events of the broker ``broker`` calls, in log order, by run, with the dead-letter reports and replays."""

    def __init__(self, broker: AsyncClient, *, max_events: int = 100_000):
        self.http = broker
        self.max_events = max_events
        self.runs: OrderedDict[str, list[CloudEvent]] = OrderedDict()
        self.failures: list[CloudEvent] = []
        self.replays: dict[str, list[CloudEvent]] = {}
        self.by_id: dict[str, CloudEvent] = {}
        self.cursor: str | None = None
        self.count = 0
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Read everything appended since the last refresh; the broker's error (``Unavailable`` if it is down)."""
        async with self._lock:
            while True:
                events, cursor = await self._page()
                for event in events:
                    self._add(event)
                self.cursor = cursor or self.cursor
                if len(events) < PAGE:
                    break
            self._trim()

    async def _page(self) -> tuple[list[CloudEvent], str | None]:
        params = {"limit": str(PAGE)}
        if self.cursor is not None:
            params["after"] = self.cursor
        page = await self.http.call("GET", f"/events?{urlencode(params)}")
        events = []
        for raw in page["events"]:
            raw.pop("cursor", None)
            try:
                events.append(from_json(orjson.dumps(raw)))
            except KnflowError as exc:  # one unreadable event must not hide the others
                log.warning("history: skipped an event the dashboard cannot read: %s", exc)
        return events, page.get("next")

    def _add(self, event: CloudEvent) -> None:
        runid = runid_of(event) or "(no runid)"
        self.runs.setdefault(runid, []).append(event)
        self.by_id.setdefault(event.get_id(), event)
        self.count += 1
        if event.get_type() == STEP_FAILED:
            self.failures.append(event)
        original = event.get_extension(REPLAY_OF)
        if original:
            self.replays.setdefault(original, []).append(event)

    def _trim(self) -> None:
        """Forget the oldest runs while more than ``max_events`` are kept."""
        while self.count > self.max_events and len(self.runs) > 1:
            _, events = self.runs.popitem(last=False)
            self.count -= len(events)
            gone = {id(e) for e in events}
            self.failures = [f for f in self.failures if id(f) not in gone]
            for event in events:
                if self.by_id.get(event.get_id()) is event:
                    del self.by_id[event.get_id()]

    def failed_original(self, event_id: str) -> CloudEvent:
        """The original event of a dead-lettered delivery, by its id; ``InvalidRequest``/``NotFound`` otherwise."""
        if not any(data_of(f).get("event_id") == event_id for f in self.failures):
            raise NotFound(f"no dead-lettered event with id {event_id!r} in the broker history")
        original = self.by_id.get(event_id)
        if original is None:
            raise NotFound(f"event {event_id!r} failed, but the original is no longer in the broker history")
        if original.get_type() == STEP_FAILED:
            raise InvalidRequest("a failure report itself is never replayed")
        return original
