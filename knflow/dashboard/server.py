"""The dashboard server: one aiohttp port for the page and the JSON API it reads.

It only composes: runs and failures come from the broker's ``GET /events`` history, models from
the registry in the artifact store, serving from the gateway's ``/v1`` control API. A backend that
is down answers 503 on its own API path; the others keep working.

    async with Dashboard(settings, broker_url=..., gateway_url=...) as dashboard:
        dashboard.url  # http://127.0.0.1:PORT

API: ``GET /api/runs``, ``GET /api/runs/{runid}``, ``GET /api/models``, ``GET /api/models/{name}``,
``GET /api/serving``, ``GET /api/serving/{name}``, ``GET /api/failures``,
``POST /api/failures/{event_id}/replay`` (``event_id``: the id of the original, dead-lettered event),
``GET /api/health`` (with the components ``knflow up`` supervises), the pipelines API (``knflow.dashboard.pipelines``),
submitting and following runs
(``knflow.dashboard.submissions``: ``POST /api/runs``, ``GET /api/runs/{runid}/events``, ``.../outcome``) and
schedules (``knflow.dashboard.schedules``), a run's training curves (``knflow.dashboard.curves``) and a served
model's series sampled from the gateway's ``/metrics`` (``knflow.dashboard.series``). Errors are
``{"error": reason}`` with the error's status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from cloudevents.core.v1.event import CloudEvent

from eventing.client import publish_async
from eventing.events import namespace_of
from functions.contract import LIFECYCLE, data_of
from infra.asyncclient import AsyncClient
from infra.auth import auth_headers
from infra.errors import InvalidRequest, KnflowError, NotFound, Unavailable
from infra.guard import access, guard_for, server_middlewares
from infra.http import answer_expect, json_response
from infra.metrics import RequestMetrics, metrics_handler, registry_of
from infra.namespaces import DEFAULT, addressed, require, scoped
from infra.serve import serve_until_signalled
from infra.settings import Settings
from infra.store import ArtifactStore, open_store
from knflow import __version__
from knflow.control import PipelineControl
from knflow.dashboard import (
    catalog,
    compare,
    curves,
    login,
    pipelines,
    runlogs,
    runs,
    schedules,
    series,
    submissions,
    traces,
)
from knflow.dashboard.history import EventHistory
from knflow.dashboard.replay import replay_event
from knflow.dashboard.traffic import GatewayView
from knflow.schedules import ScheduleControl
from knflow.supervisor import components_health
from serving.registry import ModelRegistry

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
BACKEND_TIMEOUT_S = 5.0
VIEW_TTL_S = 10.0  # how long a run's pipeline spec is trusted before it is read again


def pipeline_of(events: list) -> str:
    """The pipeline a run's events belong to (the lifecycle for events that name none)."""
    return next((str(p) for e in events if (p := e.get_extension("pipeline"))), LIFECYCLE)


def view_key(events: list) -> tuple[str, str]:
    """The namespace and pipeline of a run's events: the pipeline its views follow is that namespace's (or shared)."""
    return (namespace_of(events[0]) if events else DEFAULT), pipeline_of(events)


def runs_filter(query: Any) -> dict[str, str | None]:
    """``GET /api/runs``'s filters (``dataset``, ``experiment``, ``status``); ``InvalidRequest`` for a status that is
    none of running, succeeded, failed."""
    status = query.get("status") or None
    if status not in (None, runs.RUNNING, runs.SUCCEEDED, runs.FAILED):
        raise InvalidRequest(f"status {status!r} is none of {runs.RUNNING}, {runs.SUCCEEDED}, {runs.FAILED}")
    return {"dataset": query.get("dataset") or None, "experiment": query.get("experiment") or None, "status": status}


class Dashboard:
    """The dashboard as an async context manager; ``url`` is its address once started."""

    def __init__(
        self,
        settings: Settings,
        *,
        broker_url: str | None = None,
        gateway_url: str | None = None,
        store: ArtifactStore | None = None,
        port: int | None = None,
    ):
        self.settings = settings
        self.broker_url = broker_url or settings.url(settings.broker_port)
        self.gateway_url = gateway_url or settings.url(settings.gateway_port)
        self._store = store
        self.port = settings.dashboard_port if port is None else port
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._broker: AsyncClient | None = None  # open while the server runs
        self._gateway: AsyncClient | None = None
        self._summary_cache: dict[str, tuple[int, runs.RunSummary]] = {}
        self.control = PipelineControl(settings, store)
        self.guard = guard_for(settings)
        self._views: dict[tuple[str, str], tuple[float, runs.PipelineView]] = {}
        self.series: series.ServingSeries | None = None  # sampling the gateway while the server runs
        self.requests = RequestMetrics("knflow_api")
        self.metrics_registry = registry_of(self.requests.families)

    async def start(self) -> Dashboard:
        headers = auth_headers(self.settings)
        self._broker = AsyncClient(self.broker_url, timeout=BACKEND_TIMEOUT_S, headers=headers, name="broker")
        self._gateway = AsyncClient(self.gateway_url, timeout=BACKEND_TIMEOUT_S, headers=headers, name="gateway")
        self.history = EventHistory(self._broker)
        self.gateway = GatewayView(self._gateway)
        self.series = series.ServingSeries(self._gateway)
        self.series.start()
        #: per namespace, opened on first use (a store that is down must not stop the page)
        self.registries: dict[str, ModelRegistry] = {}
        self._runner = web.AppRunner(answer_expect(self.app()), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.url = self.settings.url(self.port)
        log.info("dashboard on %s (broker %s, gateway %s)", self.url, self.broker_url, self.gateway_url)
        return self

    async def stop(self) -> None:
        if self.series is not None:
            await self.series.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        for client in (self._broker, self._gateway):
            if client is not None:
                await client.close()

    async def __aenter__(self) -> Dashboard:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.requests.middleware(), *server_middlewares(self.settings, "/api/")])
        login.add_routes(app, self.guard.tokens)
        app.add_routes(
            [
                web.get("/", self.index),
                web.get("/api/health", self.health),
                web.get("/api/runs", self.list_runs),
                web.get("/api/runs/{runid}", self.run_detail),
                web.get("/api/models", self.list_models),
                web.get("/api/models/{name}", self.model),
                web.get("/api/serving", self.serving),
                web.get("/api/serving/{name}", self.serving_model),
                web.get("/api/failures", self.failures),
                web.post("/api/failures/{event_id}/replay", self.replay),
                web.static("/static", STATIC),
                web.get("/metrics", metrics_handler(self.metrics_registry, "viewer")),
            ]
        )
        pipelines.add_routes(app, self.control)
        submissions.add_routes(app, self)
        curves.add_routes(app, self)
        series.add_routes(app, self)
        compare.add_routes(app, self)
        runlogs.add_routes(app, self)
        schedules.add_routes(app, ScheduleControl(self.settings, self._store, self.control))
        traces.add_routes(app, self)
        return app

    @property
    def broker(self) -> AsyncClient:
        """The server's HTTP client to the broker (open while the server runs)."""
        if self._broker is None:
            raise Unavailable("the knflow server is not started")
        return self._broker

    def artifact_store(self) -> ArtifactStore:
        """The artifact store, opened on first use (a store that is down must not stop the page)."""
        if self._store is None:
            self._store = open_store(self.settings.artifacts)
        return self._store

    async def publish(self, event: CloudEvent) -> None:
        """Put an event into the broker (durable when this returns)."""
        await publish_async(self.broker_url, event, self.broker)

    # -- page --------------------------------------------------------------------------
    @access("open")
    async def index(self, request: web.Request) -> web.StreamResponse:
        token = request.query.get("token")
        if token and self.guard.tokens is not None and self.guard.tokens.verify(token):
            # the link `knflow up` prints: sign in, and drop the token from the address
            return login.with_cookie(web.Response(status=302, headers={"Location": "/"}), token)
        return web.FileResponse(STATIC / "index.html")

    @access("open")
    async def health(self, request: web.Request) -> web.Response:
        body = {"status": "ok", "broker": self.broker_url, "gateway": self.gateway_url}
        components = components_health(self.settings)  # [] when no supervisor runs on this data directory
        return json_response(
            {**body, "artifacts": self.settings.artifacts.url, "knflow": __version__, "components": components}
        )

    # -- runs and failures (broker history) ---------------------------------------------
    @access("viewer")
    async def list_runs(self, request: web.Request) -> web.Response:
        namespace = addressed(request)  # a namespace the caller does not act for is 404 before anything is read
        await self.history.refresh()
        await self._load_views({view_key(events) for events in self.history.runs.values()})
        wanted = runs_filter(request.query)
        mine = [r for r in self._summaries(datetime.now(UTC)) if self._namespace_of_run(r.runid) == namespace]
        rows = runs.select(mine, **wanted)
        rows.sort(key=lambda r: r.started, reverse=True)
        return json_response({"runs": rows, "broker": self.broker_url})  # orjson writes dataclasses

    def _namespace_of_run(self, runid: str) -> str:
        """The namespace a run in the history belongs to (its first event's ``namespace`` extension)."""
        events = self.history.runs.get(runid)
        return namespace_of(events[0]) if events else DEFAULT

    async def read_run(self, request: web.Request, runid: str) -> list:
        """A run's events after refreshing the history; ``NotFound`` before anything is read when the caller does not
        act for the namespace the request addresses, and as ``run_events`` says."""
        addressed(request)
        await self.history.refresh()
        return self.run_events(request, runid)

    def run_events(self, request: web.Request, runid: str) -> list:
        """A run's events from the refreshed history; ``NotFound`` when it has none or is another namespace's."""
        events = self.history.runs.get(runid)
        if not events or namespace_of(events[0]) != addressed(request):
            raise NotFound(f"no run {runid!r} in the broker history")
        return events

    def _summaries(self, now: datetime) -> list[runs.RunSummary]:
        """Every run's row; a run's row is recomputed only when it has new events (or, running, for its duration)."""
        rows = []
        for runid, events in self.history.runs.items():
            cached = self._summary_cache.get(runid)
            if cached is None or cached[0] != len(events):
                cached = (len(events), runs.summarize(runid, events, now, self._view(events)))
                self._summary_cache[runid] = cached
            row = cached[1]
            if row.status == runs.RUNNING:
                row = replace(row, duration_s=runs.elapsed(row.started, now))
            rows.append(row)
        if len(self._summary_cache) > len(self.history.runs):  # runs the history forgot
            self._summary_cache = {k: v for k, v in self._summary_cache.items() if k in self.history.runs}
        return rows

    @access("viewer")
    async def run_detail(self, request: web.Request) -> web.Response:
        runid = request.match_info["runid"]
        events = await self.read_run(request, runid)
        await self._load_views({view_key(events)})
        return json_response(runs.run_detail(runid, events, self.history.replays, self._view(events)))

    def _view(self, events: list) -> runs.PipelineView:
        """The run's pipeline as loaded by ``_load_views`` (the shipped lifecycle until it is)."""
        return self._views.get(view_key(events), (0.0, runs.PipelineView.lifecycle()))[1]

    async def _load_views(self, keys: set[tuple[str, str]]) -> None:
        """Read the specs of these (namespace, pipeline)s from the store (each at most every VIEW_TTL_S seconds)."""
        now = time.monotonic()
        stale = [k for k in keys if now - self._views.get(k, (-VIEW_TTL_S, None))[0] >= VIEW_TTL_S]
        for key in stale:
            namespace, name = key
            try:
                spec = await asyncio.wait_for(
                    asyncio.to_thread(self.control.resolve, name, namespace), BACKEND_TIMEOUT_S
                )
            except (KnflowError, TimeoutError, OSError) as exc:  # an unknown or unreadable pipeline: lifecycle view
                log.warning("pipeline %s of a run cannot be read (%s); showing its run by the lifecycle", name, exc)
                spec = runs.PipelineView.lifecycle().spec
            self._views[key] = (now, runs.PipelineView(spec))

    @access("viewer")
    async def failures(self, request: web.Request) -> web.Response:
        namespace = addressed(request)
        await self.history.refresh()
        replays = self.history.replays
        rows = [
            runs.failure_row(f, replays.get(data_of(f).get("event_id", ""), []))
            for f in self.history.failures
            if namespace_of(f) == namespace
        ]
        return json_response({"failures": rows[::-1]})

    @access("editor")
    async def replay(self, request: web.Request) -> web.Response:
        addressed(request)
        await self.history.refresh()
        original = self.history.failed_original(request.match_info["event_id"])
        require(request, namespace_of(original), f"no dead-lettered event with id {original.get_id()!r}")
        event = replay_event(original)
        await self.publish(event)
        log.info("replayed %s %s as %s", original.get_type(), original.get_id(), event.get_id())
        body = {"replayed": original.get_id(), "id": event.get_id(), "type": event.get_type()}
        return json_response({**body, "runid": event.get_extension("runid")}, 202)

    # -- models (registry) and serving (gateway) ----------------------------------------
    @access("viewer")
    async def list_models(self, request: web.Request) -> web.Response:
        return json_response(await self._registry(addressed(request), catalog.models_view))

    @access("viewer")
    async def model(self, request: web.Request) -> web.Response:
        return json_response(await self._registry(addressed(request), catalog.model_view, request.match_info["name"]))

    async def _registry(self, namespace: str, view: Any, *args: Any) -> Any:
        """``view(registry, *args)`` on the namespace's registry in a thread, bounded in time; the store being down is
        a 503."""
        where = self._store.url if self._store is not None else self.settings.artifacts.url
        try:
            call = asyncio.to_thread(self._read_registry, namespace, view, *args)
            return await asyncio.wait_for(call, BACKEND_TIMEOUT_S)
        except TimeoutError:
            raise Unavailable(f"artifact store {where} did not answer within {BACKEND_TIMEOUT_S:.0f} s") from None
        except OSError as exc:
            raise Unavailable(f"artifact store {where} cannot be read: {exc}") from None

    def _read_registry(self, namespace: str, view: Any, *args: Any) -> Any:
        if namespace not in self.registries:
            self.registries[namespace] = ModelRegistry(scoped(self.artifact_store(), namespace))
        return view(self.registries[namespace], *args)

    @access("viewer")
    async def serving(self, request: web.Request) -> web.Response:
        return json_response(await self.gateway.models(addressed(request)))

    @access("viewer")
    async def serving_model(self, request: web.Request) -> web.Response:
        return json_response(await self.gateway.model(request.match_info["name"], addressed(request)))


async def serve_until_signal(dashboard: Dashboard) -> bool:
    """Run the dashboard until SIGINT or SIGTERM; whether it stopped in time."""
    return await serve_until_signalled(dashboard.start, dashboard.stop, name="dashboard")
