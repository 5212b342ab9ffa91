"""Ping sources like Knative's PingSource: a cron schedule (croniter; a 6th field is seconds) emits an event.

``PingSource`` runs one schedule. ``PingSources`` holds the ones added and removed at runtime through the
broker, kept across restarts in ``pingsources.json`` beside the broker's triggers::

    GET    /sources/ping           {"items": [{"name", "spec"}]}
    GET    /sources/ping/{name}    {"name", "spec"}
    PUT    /sources/ping/{name}    Knative PingSource spec's schedule, data and ceOverrides:
                                   {"schedule": "*/5 * * * *", "data": ..., "ceOverrides": {"extensions": {...}}}
    DELETE /sources/ping/{name}    204; the schedule stops at once

The sink is the broker itself. Locally ``schedule`` may have a 6th field, seconds, after the five standard ones
(croniter's order: ``* * * * * */5`` is every 5 seconds; Knative's PingSource takes the five standard fields);
``data`` is any JSON and becomes the event's data; ``ceOverrides.extensions`` are set on every event (a
``namespace`` one makes the pings that namespace's: a viewer of another does not see the source).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from pathlib import Path
from typing import Annotated, Any

import pydantic
from aiohttp import web
from croniter import croniter

from eventing.events import NAMESPACE, new_event
from infra.aio import cancel_and_wait
from infra.atomic import write_json
from infra.errors import ConfigError, InvalidRequest, NotFound
from infra.guard import access
from infra.http import json_response, read_json
from infra.namespaces import of_extension, scope_of
from infra.validation import parse

log = logging.getLogger(__name__)

PING_TYPE = "dev.knative.sources.ping"
#: A ping source's name, as a Kubernetes resource name (DNS-1035 label).
NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
#: A ping source of the broker: such a name, or ``<ns>.<name>`` for one a namespace other than ``default`` owns.
SOURCE_NAME = re.compile(r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)?[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
MAX_SPEC_BYTES = 256 * 1024


def schedule_problem(schedule: str) -> str | None:
    """Why ``schedule`` is not a cron expression of 5 fields, 6 (the last one seconds) or an ``@`` macro; else None."""
    fields = schedule.split()
    macro = len(fields) == 1 and schedule.startswith("@")
    if (macro or len(fields) in (5, 6)) and croniter.is_valid(schedule):
        return None
    return (
        f"schedule {schedule!r} is not a cron expression: expected 5 fields (minute hour day-of-month month "
        "day-of-week), a 6th for seconds after them (* * * * * */5: every 5 seconds), or a macro such as @hourly"
    )


def _cron(value: str) -> str:
    problem = schedule_problem(value)
    if problem:
        raise ValueError(problem)
    return value


#: A cron expression as a pydantic field: refused with ``schedule_problem``'s reason.
Cron = Annotated[str, pydantic.Field(min_length=1, max_length=200), pydantic.AfterValidator(_cron)]


class CeOverrides(pydantic.BaseModel):
    """Knative's ``ceOverrides``: extensions set on every event the source sends."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    extensions: dict[Annotated[str, pydantic.Field(pattern=r"^[a-z0-9]{1,20}$")], str] = pydantic.Field(max_length=20)


class PingSpec(pydantic.BaseModel):
    """What a ping source is: Knative's PingSource ``spec.schedule`` and its ``data`` (any JSON)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    schedule: Cron
    data: Any = None
    ceOverrides: CeOverrides | None = None

    @property
    def extensions(self) -> dict[str, str]:
        return dict(self.ceOverrides.extensions) if self.ceOverrides else {}

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON (``ceOverrides`` only when set)."""
        return self.model_dump(exclude={"ceOverrides"} if self.ceOverrides is None else None)

    @property
    def namespace(self) -> str:
        """The namespace whose events the pings are (``default`` unless an extension names another)."""
        return of_extension(self.extensions.get(NAMESPACE))


class PingSource:
    """Publishes ``PING_TYPE`` (data: ``data`` as JSON, or text) at every tick of ``schedule``."""

    def __init__(
        self,
        name: str,
        schedule: str,
        data: Any = None,
        event_type: str = PING_TYPE,
        extensions: dict[str, str] | None = None,
    ):
        if schedule_problem(schedule):
            raise ConfigError(f"ping schedule {schedule!r} is not a cron expression")
        self.name, self.schedule, self.data, self.event_type = name, schedule, data, event_type
        self.extensions = extensions or {}
        self._task: asyncio.Task | None = None

    def routes(self) -> list[web.RouteDef]:
        return []

    async def start(self, publish: Any) -> None:
        self._task = asyncio.create_task(self._run(publish), name=f"ping-{self.name}")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _run(self, publish: Any) -> None:
        ticks = croniter(self.schedule, time.time())
        while True:
            at = ticks.get_next(float)
            await asyncio.sleep(max(0.0, at - time.time()))
            kind = "text/plain" if isinstance(self.data, str) else "application/json"
            event = new_event(
                self.event_type,
                f"knflow/ping/{self.name}",
                self.data,
                subject=self.name,
                datacontenttype=kind,
                extensions=self.extensions,
            )
            try:
                await publish(event)
            except Exception:
                log.exception("ping source %s could not publish", self.name)


class PingSources:
    """The ping sources added at runtime, each running its schedule; kept in ``path`` (written atomically)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.specs: dict[str, PingSpec] = {}
        self._running: dict[str, PingSource] = {}
        self._publish: Any = None
        self._lock = asyncio.Lock()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/sources/ping", self._list),
            web.get("/sources/ping/{name}", self._get),
            web.put("/sources/ping/{name}", self._put),
            web.delete("/sources/ping/{name}", self._delete),
        ]

    async def start(self, publish: Any) -> None:
        self._publish = publish
        if self.path.is_file():
            stored = json.loads(self.path.read_text())
            self.specs = {name: PingSpec.model_validate(spec) for name, spec in stored.items()}
        for name, spec in self.specs.items():
            await self._run(name, spec)

    async def stop(self) -> None:
        for source in self._running.values():
            await source.stop()
        self._running.clear()

    async def put(self, name: str, spec: PingSpec) -> None:
        """Add or replace a ping source (persisted); the same spec again changes nothing."""
        if not SOURCE_NAME.match(name):
            raise InvalidRequest(
                f"ping source name {name!r} must be a DNS label (lowercase letters, digits, '-'), "
                "or <namespace>.<label>"
            )
        async with self._lock:
            if self.specs.get(name) == spec and name in self._running:
                return
            await self._stop(name)
            self.specs[name] = spec
            self._save()
            await self._run(name, spec)
        log.info("ping source %s: %s", name, spec.schedule)

    async def delete(self, name: str) -> None:
        """Stop and forget a ping source; ``NotFound`` if there is none of that name."""
        async with self._lock:
            if name not in self.specs:
                raise NotFound(f"no ping source named {name!r}")
            await self._stop(name)
            del self.specs[name]
            self._save()
        log.info("ping source %s deleted", name)

    async def _run(self, name: str, spec: PingSpec) -> None:
        source = PingSource(name, spec.schedule, spec.data, extensions=spec.extensions)
        if self._publish is not None:
            await source.start(self._publish)
        self._running[name] = source

    async def _stop(self, name: str) -> None:
        source = self._running.pop(name, None)
        if source is not None:
            await source.stop()

    def _save(self) -> None:
        specs = {name: spec.to_dict() for name, spec in sorted(self.specs.items())}
        write_json(self.path, specs, indent=2)

    # -- HTTP -------------------------------------------------------------------------------------
    @access("viewer")
    async def _list(self, request: web.Request) -> web.Response:
        scope = scope_of(request)  # a team sees its own namespaces' ping sources only
        items = [
            {"name": name, "spec": spec.to_dict()}
            for name, spec in sorted(self.specs.items())
            if scope.sees(spec.namespace)
        ]
        return json_response({"items": items})

    @access("viewer")
    async def _get(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        spec = self.specs.get(name)
        if spec is None or not scope_of(request).sees(spec.namespace):
            raise NotFound(f"no ping source named {name!r}")
        return json_response({"name": name, "spec": spec.to_dict()})

    @access("platform")
    async def _put(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        raw = await read_json(request, MAX_SPEC_BYTES, "a ping source spec")
        spec = parse(PingSpec, raw, f"ping source {name}")
        await self.put(name, spec)
        return json_response({"name": name, "spec": spec.to_dict()})

    @access("platform")
    async def _delete(self, request: web.Request) -> web.Response:
        await self.delete(request.match_info["name"])
        return web.Response(status=204)
