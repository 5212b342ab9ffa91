"""The pipelines API of the knflow server: list, show, apply and delete pipelines on the running platform.

    GET    /api/pipelines          {"pipelines": [{"name", "description", "steps": [...]}]}
    GET    /api/pipelines/{name}   the spec (JSON)
    PUT    /api/pipelines/{name}   a spec (JSON, or YAML with a YAML content type) -> what applying did
                                   ({"pipeline", "triggers", "instances", "removed", "deployed"}); a step whose
                                   function is an (absolute) directory path is deployed from it first
    DELETE /api/pipelines/{name}   -> what was removed

Applying calls the broker and function runner (``knflow.control``) in a worker thread.
"""

from __future__ import annotations

import asyncio
import dataclasses

from aiohttp import web

from functions.runtime.pipeline import PipelineSpec, parse_pipeline
from infra.errors import InvalidRequest, PayloadTooLarge
from infra.guard import access
from infra.http import json_response
from knflow.control import PipelineControl

MAX_SPEC_BYTES = 1024 * 1024


def add_routes(app: web.Application, control: PipelineControl) -> None:
    """Register the pipeline routes on the knflow server's app."""
    api = PipelinesApi(control)
    app.router.add_get("/api/pipelines", api.list)
    app.router.add_get("/api/pipelines/{name}", api.show)
    app.router.add_put("/api/pipelines/{name}", api.apply)
    app.router.add_delete("/api/pipelines/{name}", api.delete)


def summary(spec: PipelineSpec) -> dict:
    """One pipeline as the list shows it: its steps with what they take and answer."""
    steps = [
        {"name": s.name, "function": s.function, "takes": [t.filter or t.filters for t in s.triggers], "emits": s.emits}
        for s in spec.steps
    ]
    return {"name": spec.name, "description": spec.metadata.description, "steps": steps}


class PipelinesApi:
    """Handlers over one ``PipelineControl``."""

    def __init__(self, control: PipelineControl):
        self.control = control

    @access("viewer")
    async def list(self, request: web.Request) -> web.Response:
        def read() -> list[dict]:
            names = self.control.names()
            return [summary(self.control.get(n)) for n in (names if "lifecycle" in names else ["lifecycle", *names])]

        return json_response({"pipelines": await asyncio.to_thread(read)})

    @access("viewer")
    async def show(self, request: web.Request) -> web.Response:
        spec = await asyncio.to_thread(self.control.get, request.match_info["name"])
        return json_response(spec.to_dict())

    @access("admin")
    async def apply(self, request: web.Request) -> web.Response:
        if (request.content_length or 0) > MAX_SPEC_BYTES:
            raise PayloadTooLarge(f"a pipeline spec may be {MAX_SPEC_BYTES} bytes at most")
        body = await request.content.read(MAX_SPEC_BYTES + 1)
        if len(body) > MAX_SPEC_BYTES:
            raise PayloadTooLarge(f"a pipeline spec may be {MAX_SPEC_BYTES} bytes at most")
        spec = parse_pipeline(body, "pipeline spec")
        if spec.name != request.match_info["name"]:
            raise InvalidRequest(f"the spec's metadata.name {spec.name!r} is not {request.match_info['name']!r}")
        applied = await asyncio.to_thread(self.control.apply, spec)
        return json_response(dataclasses.asdict(applied))

    @access("admin")
    async def delete(self, request: web.Request) -> web.Response:
        removed = await asyncio.to_thread(self.control.delete, request.match_info["name"])
        return json_response(dataclasses.asdict(removed))
