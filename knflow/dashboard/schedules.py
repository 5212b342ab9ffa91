"""The schedules API of the knflow server: add, list, show and delete schedules on the running platform.

    GET    /api/schedules          {"schedules": [{"name", "cron", "dataset", "pipeline", "options"}]}
    GET    /api/schedules/{name}   the schedule
    PUT    /api/schedules/{name}   {"cron", "dataset", "pipeline"?, "options"?} -> the schedule (it ticks from now on)
    DELETE /api/schedules/{name}   204; it stops at once

The work is ``knflow.schedules.ScheduleControl`` (broker and store calls), in a worker thread. A schedule belongs to
the namespace the request addresses and starts that namespace's runs (with its own pipeline of that name, else
``default``'s shared one).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from infra.errors import InvalidRequest
from infra.guard import access
from infra.http import json_response, read_json
from infra.namespaces import addressed
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


class SchedulesApi:
    """Handlers over one ``ScheduleControl``."""

    def __init__(self, control: ScheduleControl):
        self.control = control

    @access("viewer")
    async def list(self, request: web.Request) -> web.Response:
        found = await asyncio.to_thread(self.control.list, addressed(request))
        return json_response({"schedules": [s.model_dump() for s in found]})

    @access("viewer")
    async def show(self, request: web.Request) -> web.Response:
        schedule = await asyncio.to_thread(self.control.get, request.match_info["name"], addressed(request))
        return json_response(schedule.model_dump())

    @access("editor")
    async def add(self, request: web.Request) -> web.Response:
        namespace = addressed(request)
        raw = await read_json(request, MAX_SPEC_BYTES, "a schedule")
        if not isinstance(raw, dict):
            raise InvalidRequest("a schedule is a JSON object: {cron, dataset, pipeline?, options?}")
        schedule = parse(Schedule, {**raw, "name": request.match_info["name"]}, "schedule")
        added = await asyncio.to_thread(self.control.add, schedule, namespace)
        return json_response(added.model_dump())

    @access("editor")
    async def delete(self, request: web.Request) -> web.Response:
        await asyncio.to_thread(self.control.delete, request.match_info["name"], addressed(request))
        return web.Response(status=204)
