"""Following a run from outside: the broker's event history, read as it grows, one run at a time."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import orjson
import urllib3
from cloudevents.core.v1.event import CloudEvent

from eventing.bindings import to_json
from functions.contract import DATA_ARRIVED
from infra.errors import Unavailable
from infra.httpclient import JsonClient


@dataclass(frozen=True)
class SeenEvent:
    """One event of a run's history as a watcher sees it."""

    type: str
    id: str
    time: datetime | None  # None: the producer sent none (knflow keeps an event as it was sent)
    source: str
    data: Any
    extensions: dict[str, Any]

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> SeenEvent:
        known = {"type", "id", "time", "source", "data", "specversion", "datacontenttype", "cursor", "data_base64"}
        return cls(
            type=raw["type"],
            id=raw["id"],
            time=datetime.fromisoformat(raw["time"].replace("Z", "+00:00")) if raw.get("time") else None,
            source=raw.get("source", ""),
            data=raw.get("data"),
            extensions={k: v for k, v in raw.items() if k not in known},
        )

    @classmethod
    def from_cloudevent(cls, event: CloudEvent) -> SeenEvent:
        return cls.from_json(orjson.loads(to_json(event)))


def parse_page(body: dict[str, Any], after: str | None) -> tuple[list[SeenEvent], str | None]:
    """A history page (``{"events": [...], "next": cursor}``) as events and the cursor to read on from."""
    return [SeenEvent.from_json(e) for e in body["events"]], body.get("next") or after


class History:
    """Reads ``GET /events`` of a broker, long-polling for what comes next."""

    def __init__(self, broker_url: str, headers: dict[str, str] | None = None):
        self.broker = JsonClient(broker_url, urllib3.Timeout(connect=2.0, read=30.0), headers, name="broker")
        self.url = self.broker.base_url

    def page(
        self,
        *,
        runid: str | None = None,
        type: str | None = None,
        after: str | None = None,
        wait: float = 0.0,
        limit: int = 500,
    ) -> tuple[list[SeenEvent], str | None]:
        """One page of history after ``after``; waits up to ``wait`` seconds for something new."""
        query = {
            k: v
            for k, v in {"runid": runid, "type": type, "after": after, "limit": limit, "wait": wait or None}.items()
            if v is not None
        }
        return parse_page(self.broker.call("GET", f"/events?{urlencode(query)}"), after)

    def find_arrival(self, key: str, timeout: float) -> SeenEvent:
        """The ``data.arrived`` event announcing object ``key`` (which starts its run)."""
        deadline, after = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            events, after = self.page(type=DATA_ARRIVED, after=after, wait=min(2.0, timeout))
            for event in events:
                if isinstance(event.data, dict) and event.data.get("key") == key:
                    return event
        raise Unavailable(f"no data.arrived event for {key!r} within {timeout:.0f}s: is the broker watching the store?")
