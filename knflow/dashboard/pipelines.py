"""The pipelines API of the knflow server: list, show, apply and delete pipelines on the running platform.

    GET    /api/pipelines          {"pipelines": [{"name", "description", "steps": [...]}]}
    GET    /api/pipelines/{name}   the spec (JSON)
    PUT    /api/pipelines/{name}   a spec (JSON, or YAML with a YAML content type) -> what applying did
                                   ({"pipeline", "triggers", "instances", "removed", "deployed"}); a step whose
                                   function is an (absolute) directory path is deployed from it first
    DELETE /api/pipelines/{name}   -> what was removed

Applying calls the broker and function runner (``knflow.control``) in a worker thread. A namespace sees its own
pipelines and ``default``'s, which are shared (any namespace's runs may take them; only an admin of every namespace
changes them); a namespace's own pipeline is stored under its prefix and takes only its runs.
"""

from __future__ import annotations

import asyncio
import dataclasses

from aiohttp import web

from functions.contract import LIFECYCLE
from functions.runtime.pipeline import PipelineSpec, parse_pipeline
from infra.errors import Conflict, InvalidRequest, KnflowError, NotFound, PayloadTooLarge
from infra.guard import access
from infra.http import json_response
from infra.namespaces import ALL, DEFAULT, addressed, scope_of
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
            shared = self.control.names()
            specs = [self.control.get(n) for n in (shared if LIFECYCLE in shared else [LIFECYCLE, *shared])]
            if namespace != DEFAULT:
                specs += [self.control.get(n, namespace) for n in self.control.names(namespace)]
            return [summary(s) for s in specs]

        return json_response({"pipelines": await asyncio.to_thread(read)})

    @access("viewer")
    async def show(self, request: web.Request) -> web.Response:
        spec = await asyncio.to_thread(self.control.resolve, request.match_info["name"], addressed(request))
        return json_response(spec.to_dict())

    def _taken(self, name: str, namespace: str) -> str | None:
        """Why ``name`` cannot be applied in ``namespace``: a shared pipeline and a namespace's own never share a
        name, since both would take that namespace's runs (None: it can be)."""
        if namespace != DEFAULT:
            shared = name == LIFECYCLE or name in self.control.names()
            return f"pipeline name {name!r} is a shared pipeline's (of namespace default)" if shared else None
        owners = [ns for ns in self.control.namespaces() if name in self.control.names(ns)]
        return f"pipeline name {name!r} is taken by a namespace's own pipeline" if owners else None

    @staticmethod
    def _may_change(request: web.Request, namespace: str) -> None:
        """``default``'s pipelines are shared: every namespace's runs take them, so only an admin of every
        namespace may change them (as only a cluster admin uploads Kubeflow's shared pipelines)."""
        if namespace == DEFAULT and not scope_of(request).sees(ALL):
            why = "default's pipelines are shared by every namespace: changing one needs an admin of all ('*')"
            raise KnflowError(why, status=403)

    @access("admin")
    async def apply(self, request: web.Request) -> web.Response:
        if (request.content_length or 0) > MAX_SPEC_BYTES:
            raise PayloadTooLarge(f"a pipeline spec may be {MAX_SPEC_BYTES} bytes at most")
        body = await request.content.read(MAX_SPEC_BYTES + 1)
        if len(body) > MAX_SPEC_BYTES:
            raise PayloadTooLarge(f"a pipeline spec may be {MAX_SPEC_BYTES} bytes at most")
        namespace = addressed(request)
        spec = owned_by(parse_pipeline(body, "pipeline spec"), namespace)
        if spec.name != request.match_info["name"]:
            raise InvalidRequest(f"the spec's metadata.name {spec.name!r} is not {request.match_info['name']!r}")
        self._may_change(request, namespace)
        taken = await asyncio.to_thread(self._taken, spec.name, namespace)
        if taken:
            raise Conflict(taken)
        applied = await asyncio.to_thread(self.control.apply, spec)
        return json_response(dataclasses.asdict(applied))

    @access("admin")
    async def delete(self, request: web.Request) -> web.Response:
        namespace = addressed(request)
        name = request.match_info["name"]
        if namespace != DEFAULT and name not in await asyncio.to_thread(self.control.names, namespace):
            raise NotFound(f"no pipeline {name!r}")
        self._may_change(request, namespace)
        removed = await asyncio.to_thread(self.control.delete, name, namespace)
        return json_response(dataclasses.asdict(removed))
