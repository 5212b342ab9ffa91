"""The schedules API of the knflow server: add, list, show and delete schedules on the running platform.

    GET    /api/schedules          {"schedules": [{"name", "cron", "dataset", "pipeline", "options"}]}
    GET    /api/schedules/{name}   the schedule
    PUT    /api/schedules/{name}   {"cron", "dataset", "pipeline"?, "options"?} -> the schedule (it ticks from now on)
    DELETE /api/schedules/{name}   204; it stops at once

The work is ``knflow.schedules.ScheduleControl`` (broker and store calls), in a worker thread. Schedules belong to
the ``default`` namespace: a request addressing another gets 404.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from infra.errors import InvalidRequest, NotFound
from infra.guard import access
from infra.http import json_response, read_json
from infra.namespaces import DEFAULT, addressed
from infra.validation import parse
from knflow.schedules import Schedule, ScheduleControl

MAX_SPEC_BYTES = 1024 * 1024


def add_routes(app: web.Application, control: ScheduleControl) -> None:
    """Register the schedule routes on the knflow server's app."""
    api = SchedulesApi(control)
    app.router.add_get("/api/schedules", api.list)
    app.router.add_get("/api/schedules/{name}", api.show)
    app.router.add_put("/api/schedules/{name}", api.add)
    app.router.add_delete("/api/schedules/{name}", api.delete)


def in_default(request: web.Request) -> None:
    """Schedules start runs of ``default`` only: addressed from another namespace they answer 404 (not there)."""
    if addressed(request) != DEFAULT:
        raise NotFound("schedules run in the default namespace only")


class SchedulesApi:
    """Handlers over one ``ScheduleControl``."""

    def __init__(self, control: ScheduleControl):
        self.control = control

    @access("viewer")
    async def list(self, request: web.Request) -> web.Response:
        in_default(request)
        found = await asyncio.to_thread(self.control.list)
        return json_response({"schedules": [s.model_dump() for s in found]})

    @access("viewer")
    async def show(self, request: web.Request) -> web.Response:
        in_default(request)
        schedule = await asyncio.to_thread(self.control.get, request.match_info["name"])
        return json_response(schedule.model_dump())

    @access("editor")
    async def add(self, request: web.Request) -> web.Response:
        in_default(request)
        raw = await read_json(request, MAX_SPEC_BYTES, "a schedule")
        if not isinstance(raw, dict):
            raise InvalidRequest("a schedule is a JSON object: {cron, dataset, pipeline?, options?}")
        schedule = parse(Schedule, {**raw, "name": request.match_info["name"]}, "schedule")
        added = await asyncio.to_thread(self.control.add, schedule)
        return json_response(added.model_dump())

    @access("editor")
    async def delete(self, request: web.Request) -> web.Response:
        in_default(request)
        await asyncio.to_thread(self.control.delete, request.match_info["name"])
        return web.Response(status=204)
