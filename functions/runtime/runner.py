"""The local function runner: one gateway port in front of one worker process per function, scaled to zero.

``POST /functions/{name}`` (or ``/{name}``) on ``settings.functions_port`` delivers a CloudEvent to
that function's worker, starting it first if it is stopped (the event waits, bounded by
``settings.functions.start_timeout_s``, then 503). The broker's triggers use subscriber URLs
``Settings.url(functions_port)`` + ``/functions/{name}``. ``GET /functions`` answers each function's
state, pid, start time, last event and restarts. A worker that crashes is restarted; the event
it held gets 502 and is redelivered. ``PUT /admin/functions/{name}`` ``{"target": ..., "env": {...}, "python":
..., "function": ...}`` hosts another instance (it must load before the answer; kept across restarts), ``DELETE``
removes it. An instance with ``python`` (a deployed function's own environment) runs its workers under that
interpreter instead of forking them from the warm template; one with ``function`` follows that function when it
is hosted again (a pipeline step's own instance of a user's function).

Run: ``python -m functions.runtime.runner [NAME=MODULE | MODULE ...]`` or ``knflow functions``; in-process:
``runner = Runner(settings); await runner.start(); ...; await runner.stop()``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import orjson
from aiohttp import web

from eventing.ingress import Answer, IngressServer
from functions.runtime.instances import Instance, check_instance_name, instances_path, load_instances, save_instances
from functions.runtime.interpreter import Interpreter
from functions.runtime.loader import KNOWN_FUNCTIONS
from functions.runtime.metrics import FunctionMetrics
from functions.runtime.worker import Worker, WorkerGone, request_headers
from functions.runtime.zygote import template
from infra.errors import Conflict, InvalidRequest, KnflowError, NotFound, Unavailable
from infra.guard import access, guard_for, server_middlewares
from infra.http import answer_expect, error_answer, read_body, read_json
from infra.metrics import metrics_handler, registry_of
from infra.serve import run_server, serve_until_signalled
from infra.settings import Settings, load_settings
from infra.validation import parse

log = logging.getLogger(__name__)


def _json(status: int, payload: object, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json", headers=headers)


def function_named(path: str) -> str | None:
    """The function a delivery path names (``/functions/{name}`` or ``/{name}``), else None."""
    parts = path.split("/")
    if len(parts) == 3 and parts[1] == "functions" and parts[2]:
        return parts[2]
    return parts[1] if len(parts) == 2 and parts[1] else None


def parse_function_args(items: list[str]) -> dict[str, str]:
    """``NAME=MODULE`` or ``MODULE`` (named after its last part) -> {name: module}."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, module = item.partition("=")
        if not sep:
            module = item
            name = Path(item).stem if item.endswith(".py") else item.rsplit(".", 1)[-1]
        out[name] = module
    return out


class Runner:
    """The gateway and its workers; start it in-process or via ``python -m functions.runtime.runner``."""

    def __init__(self, settings: Settings, functions: Mapping[str, str] | None = None, *, sink: str | None = None):
        self.settings = settings
        self.functions = dict(KNOWN_FUNCTIONS) | dict(functions or {})
        self.sink = sink
        self._socket_dir = Path(tempfile.mkdtemp(prefix="knflow-fn-"))
        self.template = template(settings, self._on_notice)
        self._serial = itertools.count(1)
        self.metrics = FunctionMetrics()
        self._by_key: dict[str, Worker] = {}  # every worker not yet dropped, by the key its notices carry
        self.workers = {n: self._worker(n, Instance(target=m)) for n, m in self.functions.items()}
        self.instances_path = instances_path(settings.data_dir)
        self.instances = load_instances(self.instances_path)
        self.workers |= {n: self._worker(n, inst) for n, inst in self.instances.items()}
        self._admin_lock = asyncio.Lock()
        self.metrics_registry = registry_of(
            lambda: self.metrics.families({n: int(w.state == "running") for n, w in self.workers.items()})
        )
        self._runner: web.AppRunner | None = None
        self._lean: IngressServer | None = None
        self.port: int | None = None

    def app(self) -> web.Application:
        app = web.Application(
            middlewares=server_middlewares(self.settings), client_max_size=self.settings.functions.max_request_bytes
        )
        app.router.add_get("/functions", self._status)
        app.router.add_put("/admin/functions/{name}", self._host)
        app.router.add_delete("/admin/functions/{name}", self._unhost)
        app.router.add_get("/health/liveness", self._health)
        app.router.add_get("/health/readiness", self._health)
        app.router.add_get("/metrics", metrics_handler(self.metrics_registry, "viewer"))  # before /{name} takes it
        app.router.add_route("*", "/functions/{name}", self._deliver)
        app.router.add_route("*", "/{name}", self._deliver)
        return app

    async def start(self, port: int | None = None) -> int:
        """Warm the worker template, listen on ``port`` (default settings.functions_port; 0 = any): deliveries to a
        hosted function on the lean HTTP/1.1 path (``eventing.ingress``), every other request on aiohttp."""
        await self.template.ensure_running()
        self._runner = web.AppRunner(answer_expect(self.app()), access_log=None, handle_signals=False)
        await self._runner.setup()
        assert self._runner.server is not None
        limit = self.settings.functions.max_request_bytes
        self._lean = IngressServer(self._accept, self._takes, self._runner.server, limit, guard_for(self.settings))
        self.port = await self._lean.start(self.settings.host, self.settings.functions_port if port is None else port)
        log.info("function runner on %s (%d functions)", self.settings.url(self.port), len(self.workers))
        return self.port

    def url(self, name: str) -> str:
        """Where the function ``name`` takes events (before ``start``: on the port the settings give)."""
        return self.settings.url(self.port or self.settings.functions_port, f"/functions/{name}")

    async def stop(self) -> None:
        """Stop the gateway (finishing requests in flight), then every worker."""
        if self._lean is not None:
            await self._lean.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._lean is not None:
            await self._lean.wait_closed()
            self._lean = None
        await asyncio.gather(*(w.stop("runner stopping") for w in self.workers.values()))
        await self.template.stop()
        shutil.rmtree(self._socket_dir, ignore_errors=True)

    def _worker(self, name: str, instance: Instance) -> Worker:
        """A worker for ``instance``: forked from the template, or under the instance's own interpreter."""
        launcher = (
            self.template if instance.python is None else Interpreter(instance.python, self.settings, self._on_notice)
        )
        key = f"{name}-{next(self._serial)}"
        worker = Worker(name, instance, self.settings, launcher, self._socket_dir, self.sink, key=key)
        worker.on_start = self.metrics.cold_start
        self._by_key[key] = worker
        return worker

    async def _drop(self, worker: Worker, reason: str) -> None:
        await worker.stop(reason)
        self._by_key.pop(worker.key, None)

    async def host(self, name: str, instance: Instance) -> None:
        """Host (or replace) an instance: it must start and load first; then it is kept across restarts. The
        instances that follow this one (``function == name``) move to its new target and interpreter."""
        check_instance_name(name)
        if name in self.functions:
            raise Conflict(f"{name!r} is a built-in function; give the instance another name")
        worker = self._worker(name, instance)
        try:
            await self._ensure_running(worker)
        except KnflowError as exc:
            await self._drop(worker, "failed to start")
            raise InvalidRequest(f"function {name} cannot be hosted: {exc.message}") from None
        async with self._admin_lock:
            old = self.workers.get(name)
            self.workers[name] = worker
            self.instances[name] = instance
            save_instances(self.instances_path, self.instances)
        if old is not None:
            await self._drop(old, "replaced")
        log.info("function %s hosted (%s)", name, instance.target)
        await self._follow(name, instance)

    async def _follow(self, name: str, instance: Instance) -> None:
        """Move the instances that run function ``name`` with an environment of their own to its new version."""
        moved = {"target": instance.target, "python": instance.python}
        for other, inst in list(self.instances.items()):
            if other == name or inst.function != name or (inst.target, inst.python) == tuple(moved.values()):
                continue
            try:
                await self.host(other, inst.model_copy(update=moved))
            except KnflowError as exc:  # the function itself is hosted; this instance keeps its version
                log.warning("instance %s did not follow %s to its new version: %s", other, name, exc.message)

    async def unhost(self, name: str) -> None:
        """Stop hosting an instance (built-in functions stay)."""
        if name in self.functions:
            raise Conflict(f"{name!r} is a built-in function and stays")
        async with self._admin_lock:
            if name not in self.instances:
                raise NotFound(f"no function instance named {name!r}")
            worker = self.workers.pop(name)
            del self.instances[name]
            save_instances(self.instances_path, self.instances)
        await self._drop(worker, "removed")

    @access("platform")
    async def _host(self, request: web.Request) -> web.Response:
        limit = self.settings.functions.max_request_bytes
        raw = await read_json(request, limit, "function instance") if request.body_exists else None
        await self.host(request.match_info["name"], parse(Instance, raw))
        return _json(200, self.workers[request.match_info["name"]].status())

    @access("platform")
    async def _unhost(self, request: web.Request) -> web.Response:
        await self.unhost(request.match_info["name"])
        return web.Response(status=204)

    def _on_notice(self, notice: dict) -> None:
        worker = self._by_key.get(notice.get("name") or "")
        if worker is not None:
            worker.on_notice(notice)

    def status(self) -> dict[str, dict]:
        return {name: worker.status() for name, worker in self.workers.items()}

    @access("viewer")
    async def _status(self, request: web.Request) -> web.Response:
        return _json(200, self.status())

    @access("open")
    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="OK")

    @access("ingress")
    async def _deliver(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        limit = self.settings.functions.max_request_bytes
        body = await read_body(request, limit, "request body") if name in self.workers else b""
        answer = await self._invoke(name, request.method, request_headers(request.headers), body)
        return web.Response(status=answer.status, body=answer.body, headers=answer.headers)

    def _takes(self, path: str) -> bool:
        """Whether the lean path delivers a POST to ``path``: one to a hosted function (aiohttp answers the rest)."""
        return function_named(path) in self.workers

    async def _accept(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        """A delivery on the lean path (``_takes`` checked the name)."""
        return await self._invoke(function_named(path) or "", "POST", request_headers(headers), body)

    async def _invoke(self, name: str, method: str, headers: dict[str, str], body: bytes) -> Answer:
        """Forward one request to ``name``'s worker (started if needed); the worker's answer, or the error's."""
        worker = self.workers.get(name)
        began = time.monotonic()
        try:
            if worker is None:
                raise NotFound(f"no function named {name!r}; known: {sorted(self.workers)}")
            for attempt in (1, 2):
                await self._ensure_running(worker)
                try:
                    status, out, data = await worker.forward(method, "/", headers, body)
                    break
                except WorkerGone:
                    if attempt == 2:
                        raise
            answer = Answer(status, data, out)
        except KnflowError as exc:
            answer = Answer(*error_answer(exc))
        if worker is not None:  # unknown names are not counted: they would let callers make up label values
            self.metrics.invoked(name, answer.status, time.monotonic() - began)
        return answer

    async def _ensure_running(self, worker: Worker) -> None:
        if worker.state == "running":
            return  # the common case, on every event: no task for a wait that would not wait
        timeout = self.settings.functions.start_timeout_s
        try:
            await asyncio.wait_for(worker.ensure_running(), timeout)
        except TimeoutError:
            raise Unavailable(f"function {worker.name} did not start within {timeout}s") from None


def main(argv: list[str] | None = None) -> int:
    """``python -m functions.runtime.runner [NAME=MODULE | MODULE ...]``."""
    parser = argparse.ArgumentParser(prog="python -m functions.runtime.runner", description=__doc__.splitlines()[0])
    parser.add_argument("functions", nargs="*", help="extra functions: NAME=MODULE, a dotted module or a .py file")
    args = parser.parse_args(argv)
    settings = load_settings()
    runner = Runner(settings, parse_function_args(args.functions), sink=os.environ.get("K_SINK"))
    # tracing is per function: each worker traces as ``function-<name>`` (``zygote.worker_main``)
    return run_server(lambda: serve_until_signalled(runner.start, runner.stop, name="runner"), settings, service=None)


if __name__ == "__main__":
    sys.exit(main())
