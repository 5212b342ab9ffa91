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
from infra.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge
from infra.guard import access
from infra.http import json_response
from infra.namespaces import DEFAULT, addressed
from knflow.control import PipelineControl

MAX_SPEC_BYTES = 1024 * 1024


def add_routes(app: web.Application, control: PipelineControl) -> None:
    """Register the pipeline routes on the knflow server's app."""
    api = PipelinesApi(control)
    app.router.add_get("/api/pipelines", api.list)
    app.router.add_get("/api/pipelines/{name}", api.show)
    app.router.add_put("/api/pipelines/{name}", api.apply)
    app.router.add_delete("/api/pipelines/{name}", api.delete)


def owned_by(spec: PipelineSpec, namespace: str) -> PipelineSpec:
    """The spec as the namespace applying it owns it (``metadata.namespace``); a spec naming another is refused."""
    if spec.metadata.namespace not in (None, namespace):
        raise InvalidRequest(f"the spec's metadata.namespace {spec.metadata.namespace!r} is not {namespace!r}")
    owner = None if namespace == DEFAULT else namespace  # default's specs stay exactly as they were written
    return spec.model_copy(update={"metadata": spec.metadata.model_copy(update={"namespace": owner})})


def summary(spec: PipelineSpec) -> dict:
    """One pipeline as the list shows it: its steps with what they take and answer."""
    steps = [
        {"name": s.name, "function": s.function, "takes": [t.filter or t.filters for t in s.triggers], "emits": s.emits}
        for s in spec.steps
    ]
    return {"name": spec.name, "description": spec.metadata.description, "namespace": spec.namespace, "steps": steps}


class PipelinesApi:
    """Handlers over one ``PipelineControl``."""

    def __init__(self, control: PipelineControl):
        self.control = control

    @access("viewer")
    async def list(self, request: web.Request) -> web.Response:
        namespace = addressed(request)

        def read() -> list[dict]:
            names = self.control.names()
            specs = [self.control.get(n) for n in (names if "lifecycle" in names else ["lifecycle", *names])]
            return [summary(s) for s in specs if s.namespace in (DEFAULT, namespace)]

        return json_response({"pipelines": await asyncio.to_thread(read)})

    @access("viewer")
    async def show(self, request: web.Request) -> web.Response:
        spec = await self._visible(request, request.match_info["name"])
        return json_response(spec.to_dict())

    def _owner(self, name: str) -> str | None:
        """The namespace owning the stored pipeline ``name`` (None: there is none)."""
        return self.control.get(name).namespace if name in self.control.names() else None

    async def _visible(self, request: web.Request, name: str, *, owned: bool = False) -> PipelineSpec:
        """The pipeline ``name`` if the addressed namespace owns it (or, unless ``owned``, ``default`` shares it);
        ``NotFound`` otherwise, as for a pipeline that does not exist."""
        namespace = addressed(request)
        spec = await asyncio.to_thread(self.control.get, name)
        if spec.namespace != namespace and (owned or spec.namespace != DEFAULT):
            raise NotFound(f"no pipeline {name!r}")
        return spec

    @access("admin")
    async def apply(self, request: web.Request) -> web.Response:
        if (request.content_length or 0) > MAX_SPEC_BYTES:
            raise PayloadTooLarge(f"a pipeline spec may be {MAX_SPEC_BYTES} bytes at most")
        body = await request.content.read(MAX_SPEC_BYTES + 1)
        if len(body) > MAX_SPEC_BYTES:
            raise PayloadTooLarge(f"a pipeline spec may be {MAX_SPEC_BYTES} bytes at most")
        spec = owned_by(parse_pipeline(body, "pipeline spec"), addressed(request))
        if spec.name != request.match_info["name"]:
            raise InvalidRequest(f"the spec's metadata.name {spec.name!r} is not {request.match_info['name']!r}")
        if await asyncio.to_thread(self._owner, spec.name) not in (None, spec.namespace):  # never another's pipeline
            raise Conflict(f"pipeline name {spec.name!r} is taken: pipeline names are shared by every namespace")
        applied = await asyncio.to_thread(self.control.apply, spec)
        return json_response(dataclasses.asdict(applied))

    @access("admin")
    async def delete(self, request: web.Request) -> web.Response:
        await self._visible(request, request.match_info["name"], owned=True)
        removed = await asyncio.to_thread(self.control.delete, request.match_info["name"])
        return json_response(dataclasses.asdict(removed))
