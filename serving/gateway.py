"""The inference gateway: one aiohttp port for V2 REST, the control API and metrics, and one gRPC port for V2 gRPC,
in front of replica pools.

Run it with ``python -m serving.gateway`` (settings from ``load_settings()``), or in-process
with ``Gateway(settings, store)`` and ``await gateway.start()``. With ``serving.model`` and ``serving.model_version``
set it is one model's server, as a model's Knative Service runs it: it serves that version alone, starts
``serving.max_replicas`` replicas at start and keeps them (Knative scales the pods), is ready once one has loaded
the model, and has no control API (the Service's traffic block is the split).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from aiohttp import web
from prometheus_client.core import Metric

from eventing.ingress import Answer, IngressServer
from infra.errors import InvalidRequest, KnflowError, NotFound
from infra.guard import access, guard_for, server_middlewares
from infra.http import answer_expect, error_answer, json_response, read_body
from infra.metrics import metrics_handler, registry_of
from infra.namespaces import DEFAULT, addressed, qualified, split
from infra.serve import run_server, serve_until_signalled
from infra.settings import Settings
from infra.store import ArtifactStore
from serving import binary, dataplane
from serving.activator import RevisionPool
from serving.autoscaler import ScalePolicy
from serving.grpcservice import GrpcService
from serving.logger import InferenceLogger
from serving.metrics import Metrics, revision_namespace
from serving.namespaced import NamespacedRegistry
from serving.registry import ModelCard
from serving.replicas import replica_server
from serving.revisions import Revision, Router, ServingState, TrafficTarget, load_states, update_state
from serving.rollout import Rollouts

log = logging.getLogger(__name__)
TAG_HEADER = "x-knflow-tag"
_LENGTH_HEADER = binary.HEADER_LENGTH.lower()
_JSON = {"Content-Type": "application/json"}


def infer_target(path: str) -> tuple[str, str | None] | None:
    """``(model, version)`` of a V2 infer path (``/v2/models/{name}[/versions/{version}]/infer``), else None."""
    parts = path.split("/")
    if len(parts) == 5 and parts[:3] == ["", "v2", "models"] and parts[4] == "infer" and parts[3]:
        return parts[3], None
    if len(parts) == 7 and parts[:3] == ["", "v2", "models"] and parts[4] == "versions" and parts[6] == "infer":
        return (parts[3], parts[5]) if parts[3] and parts[5] else None
    return None


class Gateway:
    """Routes V2 requests to revision pools, runs the autoscaler and the canary judge, serves the control API."""

    def __init__(self, settings: Settings, store: ArtifactStore, *, policy: ScalePolicy | None = None):
        s = settings.serving
        self.settings = settings
        self.store = store
        self.registry = NamespacedRegistry(store)  # models keyed by qualified name (infra.namespaces)
        self.policy = policy or ScalePolicy.of(s)
        self.states: dict[str, ServingState] = {}
        self.pools: dict[str, RevisionPool] = {}
        self.cards: dict[str, tuple[ModelCard, Path]] = {}
        self.router = Router()
        self.metrics = Metrics()
        self.metrics_registry = registry_of(self._metric_families)
        self.forks = replica_server()
        self.cache_dir = settings.data_dir / "serving-cache"
        self.state_lock = asyncio.Lock()
        self.runner: web.AppRunner | None = None
        self._lean: IngressServer | None = None
        self._scaler: asyncio.Task | None = None
        self._judge: asyncio.Task | None = None
        self.rollouts = Rollouts(self)
        self.inference_log = InferenceLogger(
            self.rollouts.broker_url,
            queue_limit=s.log_queue_limit,
            queue_bytes=s.log_queue_bytes,
            max_event_bytes=settings.eventing.max_event_bytes,
            endpoint_of=self._endpoint,
            credentials=self.rollouts.credentials,
        )
        self.port = settings.gateway_port
        self.grpc_port = settings.grpc_port
        self.grpc: GrpcService | None = None
        self.pinned = pinned_revision(settings)

    @functools.cached_property
    def socket_dir(self) -> Path:
        """Where the replicas' Unix sockets are: made when the first pool needs it (a gateway that only commits
        serving state makes none), removed by ``stop``."""
        return Path(tempfile.mkdtemp(prefix="knflow-sock-"))

    # -- lifecycle -------------------------------------------------------------------
    def app(self) -> web.Application:
        from serving import control

        app = web.Application(
            middlewares=server_middlewares(self.settings), client_max_size=self.settings.serving.max_request_bytes
        )
        r = app.router
        r.add_get("/v2", self.server_metadata)
        r.add_get("/v2/health/live", self.live)
        r.add_get("/v2/health/ready", self.server_ready)
        for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
            r.add_get(base, self.model_metadata)
            r.add_get(base + "/ready", self.model_ready)
            r.add_post(base + "/infer", self.infer)
        # "inference": open where inference is (loopback, a model's pod read through the API server), else a token
        r.add_get("/metrics", metrics_handler(self.metrics_registry, "inference", revision_namespace))
        if self.pinned is None:
            control.add_routes(app, self)
        return app

    async def start(self, port: int | None = None, grpc_port: int | None = None) -> int:
        """Start the replicas' fork server, restore state, listen on HTTP and gRPC; the bound HTTP port (0: any)."""
        await self.forks.ensure_running()
        if self.pinned is None:
            self.states = await asyncio.to_thread(load_states, self.store)
        else:
            only = self.pinned
            self.states = {only.model: ServingState(only.model, (only,), (TrafficTarget(only.id, 100),))}
        self.runner = web.AppRunner(answer_expect(self.app()), access_log=None)
        await self.runner.setup()
        assert self.runner.server is not None
        limit, guard = self.settings.serving.max_request_bytes, guard_for(self.settings)
        is_infer = lambda path: infer_target(path) is not None  # noqa: E731
        self._lean = IngressServer(self._accept, is_infer, self.runner.server, limit, guard, level="inference")
        self.port = await self._lean.start(self.settings.host, self.port if port is None else port)
        self.grpc = GrpcService(self)
        self.grpc_port = await self.grpc.start(self.settings.host, self.grpc_port if grpc_port is None else grpc_port)
        if self.pinned is None:
            self._scaler = asyncio.create_task(self._autoscale())
        else:  # Knative scales this server's pods; the replicas inside one are fixed
            self.pool(self.pinned).scale_to(self.settings.serving.max_replicas)
        self._judge = asyncio.create_task(self.rollouts.run(self.settings.serving.autoscale_tick_s))
        await self.inference_log.start(self.settings.url(self.port))
        url, models = self.settings.url(self.port), len(self.states)
        log.info("gateway listening on %s (gRPC %d) with %d models", url, self.grpc_port, models)
        return self.port

    async def stop(self) -> None:
        for task in (self._scaler, self._judge):
            if task:
                task.cancel()
        if self.grpc:  # stop listening and let in-flight requests finish while their replicas still run
            await self.grpc.stop()
        if self._lean is not None:
            await self._lean.stop()
        if self.runner:
            await self.runner.cleanup()
        if self._lean is not None:
            await self._lean.wait_closed()
        await self.inference_log.stop()
        for pool in self.pools.values():
            await pool.close()
        await self.forks.stop()
        if "socket_dir" in vars(self):  # a pool made it
            shutil.rmtree(self.socket_dir, ignore_errors=True)

    # -- pools -----------------------------------------------------------------------
    def pool(self, revision: Revision) -> RevisionPool:
        pool = self.pools.get(revision.id)
        if pool is None:
            pool = RevisionPool(
                revision,
                forks=self.forks,
                fetch=self.fetch,
                socket_dir=self.socket_dir,
                policy=self.policy,
                queue_limit=self.settings.serving.queue_limit,
                activation_timeout_s=self.settings.serving.activation_timeout_s,
                metrics=self.metrics,
            )
            self.pools[revision.id] = pool
        return pool

    async def fetch(self, revision: Revision) -> tuple[ModelCard, Path]:
        """The revision's card and a verified local model file (fetched once per gateway)."""
        if revision.id not in self.cards:
            card = await asyncio.to_thread(self.registry.get, revision.model, revision.version)
            path = await asyncio.to_thread(self.registry.fetch, revision.model, revision.version, self.cache_dir)
            self.cards[revision.id] = (card, path)
        return self.cards[revision.id]

    async def _autoscale(self) -> None:
        tick = self.settings.serving.autoscale_tick_s
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for pool in list(self.pools.values()):
                try:
                    self._scale(pool, now)
                except Exception:  # one revision's trouble must not stop scaling the others
                    log.exception("autoscaler: revision %s", pool.revision.id)

    def _scale(self, pool: RevisionPool, now: float) -> None:
        """One KPA tick for one revision: observe, decide, act, log and count the decision."""
        concurrency, arrived = pool.tick(now)
        pool.kpa.observe(now, concurrency, arrived + pool.waiting)
        ready = len(pool.replicas)
        decision = pool.kpa.decide(now, ready)
        current = ready + pool.starting
        if decision.desired == current or (decision.desired < current and pool.starting):
            return
        direction = "up" if decision.desired > current else "down"
        log.info(
            "autoscaler: revision %s %s %d -> %d (%s; stable %.2f, panic %.2f)",
            pool.revision.id, direction, current, decision.desired, decision.reason,
            decision.stable_concurrency, decision.panic_concurrency,
        )  # fmt: skip
        self.metrics.decision(pool.revision.id, direction)
        pool.scale_to(decision.desired)

    async def commit(self, model: str, change: Callable[[ServingState], ServingState]) -> ServingState:
        """Apply ``change`` to the model's stored serving state (``state.json``) by compare-and-swap, re-applied
        when another gateway sharing the store wrote first, then serve by the result."""
        state = await asyncio.to_thread(update_state, self.store, model, change)
        self.states[model] = state
        return state

    # -- V2 --------------------------------------------------------------------------
    def state(self, name: str) -> ServingState:
        state = self.states.get(name)
        if state is None or not state.revisions:
            raise NotFound(f"model {name!r} is not deployed")
        return state

    def pick(self, name: str, version: str | None = None, tag: str | None = None) -> Revision:
        """The revision a request for ``name`` (a registry ``version``, a traffic ``tag``) goes to."""
        return self.router.pick(self.state(name), tag=tag, version=version)

    def route(self, request: web.Request) -> Revision:
        info = request.match_info
        name = qualified(addressed(request), info["name"])  # another namespace's model: 404, as if not deployed
        return self.pick(name, info.get("version"), request.headers.get(TAG_HEADER))

    async def forward(self, revision: Revision, body: bytes, codec: int) -> tuple[int, bytes]:
        """Send one request body in ``codec`` to the revision's replicas, counted in the metrics; status and answer."""
        began = time.monotonic()
        try:
            status, out = await self.pool(revision).infer(body, codec)
        except KnflowError as exc:
            self.metrics.observe(revision.id, exc.status, time.monotonic() - began)
            raise
        self.metrics.observe(revision.id, status, time.monotonic() - began)
        return status, out

    @access("inference")
    async def infer(self, request: web.Request) -> web.Response:
        body = await read_body(request, self.settings.serving.max_request_bytes, "request body")
        answer = await self.answer(self.route(request), request.headers, body)
        return web.Response(body=answer.body, status=answer.status, headers=answer.headers)

    async def _accept(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        """V2 inference on the lean HTTP/1.1 path (``eventing.ingress``): an anonymous caller's, to ``default``."""
        target = infer_target(path)
        assert target is not None  # the lean path took the request for its path
        try:
            revision = self.pick(qualified(DEFAULT, target[0]), target[1], headers.get(TAG_HEADER))
            return await self.answer(revision, headers, body)
        except KnflowError as exc:  # through the error middleware's table
            return Answer(*error_answer(exc))

    async def answer(self, revision: Revision, headers: Mapping[str, str], body: bytes) -> Answer:
        """One V2 REST inference (JSON, or with binary tensor data) on ``revision``, logged when it logs."""
        header = headers.get(_LENGTH_HEADER)
        if header is None:
            status, out = await self.forward(revision, body, dataplane.JSON)
        else:
            status, out = await self.forward(
                revision, binary.request_body(_header_length(header), body), dataplane.BINARY
            )
        length, answer = binary.answer(out)
        if length is None:
            self.inference_log.log(revision, headers, body, status, answer)  # samples and queues; never waits
            return Answer(status, answer, _JSON)
        self.inference_log.log(revision, headers, body, status, answer, "application/octet-stream")
        return Answer(status, answer, {"Content-Type": "application/octet-stream", binary.HEADER_LENGTH: str(length)})

    def _endpoint(self, revision: Revision) -> str:
        """KServe's ``endpoint`` of a revision's logged events: ``canary`` while it is the open canary."""
        state = self.states.get(revision.model)
        return "canary" if state is not None and state.canary and state.canary.revision == revision.id else "default"

    @access("open")
    async def server_metadata(self, request: web.Request) -> web.Response:
        return json_response(dataplane.SERVER_METADATA)

    @access("open")
    async def live(self, request: web.Request) -> web.Response:
        return json_response({"live": True})

    def ready(self) -> bool:
        """Whether the gateway can start replicas (its fork server runs); one model's server: whether a replica of its
        model runs (one that exited is started again here, since Knative sends no request to a pod not ready)."""
        if not self.forks.running:
            return False
        if self.pinned is None:
            return True
        pool = self.pool(self.pinned)
        if not pool.replicas and not pool.starting:
            pool.scale_to(self.settings.serving.max_replicas)
        return bool(pool.replicas)

    @access("open")
    async def server_ready(self, request: web.Request) -> web.Response:
        ready = self.ready()
        return json_response({"ready": ready}, 200 if ready else 503)

    async def metadata(self, revision: Revision) -> dict:
        """The V2 model metadata of the revision's model."""
        card, _ = await self.fetch(revision)
        state = self.state(revision.model)
        return {
            "name": split(revision.model)[1],
            "versions": sorted({str(r.version) for r in state.revisions}, key=int),
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in card.inputs],
            "outputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in card.outputs],
        }

    @access("inference")
    async def model_metadata(self, request: web.Request) -> web.Response:
        return json_response(await self.metadata(self.route(request)))

    @access("inference")
    async def model_ready(self, request: web.Request) -> web.Response:
        revision = self.route(request)
        await self.fetch(revision)  # a model that cannot be fetched and verified is not ready
        return json_response({"name": split(revision.model)[1], "version": str(revision.version), "ready": True})

    def _metric_families(self) -> Iterable[Metric]:
        """What ``/metrics`` shows: the gateway's counters, its pools' gauges and the inference logger's."""
        gauges: dict[str, dict[str, float]] = {"replicas": {}, "inflight": {}, "queued": {}, "cold_start_seconds": {}}
        for rid, pool in self.pools.items():
            if pool.cold_starts:
                gauges["cold_start_seconds"][rid] = round(pool.cold_starts[-1], 6)
            gauges["replicas"][rid] = len(pool.replicas)
            gauges["inflight"][rid] = pool.inflight
            gauges["queued"][rid] = pool.waiting
        yield from self.metrics.families(gauges)
        yield from self.inference_log.families()


def pinned_revision(settings: Settings) -> Revision | None:
    """The one revision a one-model server serves (``serving.model`` at ``serving.model_version``), or None."""
    s = settings.serving
    if not s.model:
        return None
    return Revision(f"{s.model}-v{s.model_version}", s.model, s.model_version, intra_op_threads=s.intra_op_threads)


def _header_length(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) > 0xFFFFFFFF:
        raise InvalidRequest(f"{binary.HEADER_LENGTH} must be a whole number of bytes, got {text!r}"[:300])
    return int(text)


def main() -> int:
    """Entry point of ``python -m serving.gateway``; ``kill -USR1`` dumps every thread's stack to stderr."""
    from infra.settings import load_settings
    from infra.store import open_store

    settings = load_settings()

    async def serve() -> bool:
        gateway = Gateway(settings, open_store(settings.artifacts))
        return await serve_until_signalled(gateway.start, gateway.stop, name="gateway")

    return run_server(serve, settings, service="gateway", dump_stacks=True)


if __name__ == "__main__":
    sys.exit(main())
