"""The gateway's control API (``/v1``): deploy revisions, split traffic, roll back, inspect.

    POST /v1/models/{name}/revisions  {"version": 3 | "production", "batching": {"max_batch": 8, "max_delay_ms": 2},
                                       "intra_op_threads": 1, "percent": 10, "tag": "canary",
                                       "rollout": {"promote_after_requests": 100, "max_error_rate": 0.05},
                                       "announce": {"type": "...", "extensions": {"runid": "run-...", ...}},
                                       "logger": {"mode": "all", "sample_rate": 0.1,
                                                  "extensions": {"runid": "run-...", "pipeline": "lifecycle"}}}
         -> 201 {"revision": "digits-00002", "version": 3, "endpoint": "http://H:P/v2/models/digits/infer"}
         (the first revision takes 100 %; with "percent" the new revision takes that share, the rest
          stays on the current main revision; otherwise it takes no traffic until PUT .../traffic;
          with "rollout" too, the gateway judges the canary on its tick and promotes or rolls it back,
          see serving/rollout.py — "announce" says how the outcome is told to the deploying run; with "logger",
          a sampled share of the revision's requests and responses are published as KServe inference-logger
          CloudEvents carrying those extensions, see serving/logger.py; with the header ``Idempotency-Key: K``, a
          deploy asked again under K — by a caller that went down before it read the answer — changes nothing
          and gets the revision K made, with 200)
    PUT  /v1/models/{name}/traffic    {"traffic": [{"revision": r, "percent": p, "tag": t}, ...]}
    POST /v1/models/{name}/rollback   -> the previous traffic split
    GET  /v1/models/{name}            revisions (with replicas, in-flight, requests, errors), traffic
    GET  /v1/models                   {"models": [...]}

A tagged target is reached directly with the request header ``x-knflow-tag: <tag>``. Bodies are checked
against the models below; a wrong type or range is a 400 naming the field.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Annotated, Literal, TypeVar

import orjson
import pydantic
from aiohttp import web

from infra.errors import InvalidRequest, NotFound
from infra.guard import access
from infra.namespaces import addressed, qualified, split
from infra.validation import parse
from serving.client import IDEMPOTENCY_KEY
from serving.logevents import LOGGER_ATTRIBUTES
from serving.logger import LogSpec
from serving.revisions import (
    Batching,
    Revision,
    ServingState,
    TrafficTarget,
    add_revision,
    rollback,
    set_traffic,
)
from serving.rollout import Announce, Canary, RolloutPolicy
from serving.runtime import host_threads

if TYPE_CHECKING:
    from serving.gateway import Gateway

B = TypeVar("B", bound=pydantic.BaseModel)


TAG = r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"  # a DNS label, as Knative requires of traffic tags
TRACEPARENT_FORM = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
_KEY_FORM = re.compile(r"[!-~]{1,256}")


class _Body(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True, frozen=True)


class BatchingBody(_Body):
    max_batch: int = pydantic.Field(default=1, ge=1, le=4096)
    max_delay_ms: float = pydantic.Field(default=0.0, ge=0, le=1000)


class RolloutBody(_Body):
    promote_after_requests: int = pydantic.Field(RolloutPolicy.promote_after_requests, ge=1)
    max_error_rate: float = pydantic.Field(RolloutPolicy.max_error_rate, ge=0, le=1)


def _traceparent(value: dict[str, str]) -> dict[str, str]:
    if "traceparent" in value and not TRACEPARENT_FORM.match(value["traceparent"]):
        raise ValueError("traceparent must be a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)")
    return value


#: CloudEvent extensions a deploy hands the gateway to put on the events it sends for the deploying run.
Extensions = Annotated[
    dict[Annotated[str, pydantic.Field(pattern=r"^[a-z0-9]{1,20}$")], Annotated[str, pydantic.Field(max_length=512)]],
    pydantic.Field(max_length=16),
    pydantic.AfterValidator(_traceparent),
]


class AnnounceBody(_Body):
    """The event the canary's outcome is announced as: its type and the deploying run's extensions."""

    type: str = pydantic.Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9][-A-Za-z0-9._]*$")
    extensions: Extensions = pydantic.Field(default_factory=dict)


class LoggerBody(_Body):
    """Inference logging (KServe's predictor ``logger``): which messages, the share of requests, and the
    deploying run's extensions the events carry (``runid``, ``pipeline``: that run's pipeline takes them)."""

    mode: Literal["all", "request", "response"] = "all"
    sample_rate: float = pydantic.Field(1.0, ge=0, le=1)
    extensions: Extensions = pydantic.Field(default_factory=dict)

    @pydantic.field_validator("extensions")
    @classmethod
    def _not_the_logger_own(cls, value: dict[str, str]) -> dict[str, str]:
        taken = sorted(set(value) & LOGGER_ATTRIBUTES)
        if taken:
            raise ValueError(f"{taken} are set by the logger itself")
        return value


class DeployBody(_Body):
    """``POST /v1/models/{name}/revisions``."""

    version: pydantic.PositiveInt | Annotated[str, pydantic.Field(pattern=r"^[a-z][-a-z0-9]{0,62}$")] = "latest"
    batching: BatchingBody = BatchingBody()
    intra_op_threads: int | None = pydantic.Field(None, ge=0, le=1024)
    percent: int | None = pydantic.Field(None, ge=0, le=100)
    tag: str | None = pydantic.Field(None, pattern=TAG)
    rollout: RolloutBody | None = None
    announce: AnnounceBody | None = None
    logger: LoggerBody | None = None

    @pydantic.model_validator(mode="after")
    def _rollout_needs_a_canary(self) -> DeployBody:
        if self.rollout is not None and not (self.percent is not None and 0 < self.percent < 100):
            raise ValueError('"rollout" needs a canary: a "percent" between 1 and 99')
        return self


class TargetBody(_Body):
    revision: str = pydantic.Field(min_length=1, max_length=256)
    percent: int = pydantic.Field(ge=0, le=100)
    tag: str | None = pydantic.Field(None, pattern=TAG)


class TrafficBody(_Body):
    """``PUT /v1/models/{name}/traffic``."""

    traffic: list[TargetBody] = pydantic.Field(min_length=1, max_length=100)


def _log_spec(body: LoggerBody | None) -> LogSpec | None:
    return LogSpec(body.mode, body.sample_rate, dict(body.extensions)) if body else None


async def _body(request: web.Request, model: type[B]) -> B:
    try:
        raw = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"body is not valid JSON: {exc}") from None
    return parse(model, raw)


def deployed(state: ServingState) -> ServingState:
    """``state`` if the model has revisions, else ``NotFound`` (traffic and rollback need one)."""
    if not state.revisions:
        raise NotFound(f"model {state.model!r} is not deployed")
    return state


def _idempotency_key(request: web.Request) -> str | None:
    """The deploy's ``Idempotency-Key`` header (printable ASCII, at most 256 characters), if it sent one."""
    key = request.headers.get(IDEMPOTENCY_KEY)
    if key is not None and not _KEY_FORM.fullmatch(key):
        raise InvalidRequest(f"{IDEMPOTENCY_KEY} must be 1 to 256 printable ASCII characters without spaces")
    return key


def _model(request: web.Request) -> str:
    """The gateway's key of the model a request names, in the namespace it addresses (``infra.namespaces``)."""
    return qualified(addressed(request), request.match_info["name"])


def add_routes(app: web.Application, gateway: Gateway) -> None:
    """Register the control routes on the gateway's app."""
    api = ControlApi(gateway)
    app.router.add_get("/v1/models", api.list_models)
    app.router.add_get("/v1/models/{name}", api.describe)
    app.router.add_post("/v1/models/{name}/revisions", api.deploy)
    app.router.add_put("/v1/models/{name}/traffic", api.traffic)
    app.router.add_post("/v1/models/{name}/rollback", api.rollback)


class ControlApi:
    """Handlers that change or read a model's serving state; every change is persisted before it answers."""

    def __init__(self, gateway: Gateway):
        self.gw = gateway

    @access("editor")
    async def deploy(self, request: web.Request) -> web.Response:
        name = _model(request)
        body = await _body(request, DeployBody)
        card = await asyncio.to_thread(self.gw.registry.get, name, body.version)
        batching = Batching(body.batching.max_batch, body.batching.max_delay_ms)
        serving = self.gw.settings.serving
        requested = serving.intra_op_threads if body.intra_op_threads is None else body.intra_op_threads
        threads = host_threads(requested, serving.max_replicas)
        key = _idempotency_key(request)
        made: dict[str, Revision] = {}
        new: list[bool] = []

        def deploy(state: ServingState) -> ServingState:
            earlier = [r for r in state.revisions if key is not None and r.request == key]
            new[:] = [not earlier]
            if earlier:  # asked again (a deploy that went down before it read the answer): nothing new
                made["rev"] = earlier[0]
                return state
            main = max(state.traffic, key=lambda t: t.percent).revision if state.traffic else None
            state, made["rev"] = add_revision(state, card.version, batching, threads, _log_spec(body.logger), key)
            rev = made["rev"]
            if body.percent is not None and main is not None:
                targets = [TrafficTarget(main, 100 - body.percent), TrafficTarget(rev.id, body.percent, body.tag)]
                state = set_traffic(state, targets)
                if body.rollout is not None:
                    policy = RolloutPolicy(body.rollout.promote_after_requests, body.rollout.max_error_rate)
                    announce = Announce(body.announce.type, dict(body.announce.extensions)) if body.announce else None
                    canary = Canary(rev.id, rev.version, policy, announce)
                    state = replace(state, canary=canary)
            return state

        async with self.gw.state_lock:
            await self.gw.commit(name, deploy)
        rev = made["rev"]
        endpoint = f"http://{request.host}/v2/models/{request.match_info['name']}/infer"
        answer = {"revision": rev.id, "version": rev.version, "endpoint": endpoint}
        return web.json_response(answer, status=201 if new[0] else 200)

    @access("editor")
    async def traffic(self, request: web.Request) -> web.Response:
        name = _model(request)
        body = await _body(request, TrafficBody)
        targets = [TrafficTarget(t.revision, t.percent, t.tag) for t in body.traffic]
        async with self.gw.state_lock:
            state = await self.gw.commit(name, lambda state: set_traffic(deployed(state), targets))
        return web.json_response(self._view(state))

    @access("editor")
    async def rollback(self, request: web.Request) -> web.Response:
        async with self.gw.state_lock:
            state = await self.gw.commit(_model(request), lambda state: rollback(deployed(state)))
        return web.json_response(self._view(state))

    @access("viewer")
    async def describe(self, request: web.Request) -> web.Response:
        name = _model(request)
        if name not in self.gw.states:
            raise NotFound(f"model {request.match_info['name']!r} is not deployed")
        return web.json_response(self._view(self.gw.states[name]))

    @access("viewer")
    async def list_models(self, request: web.Request) -> web.Response:
        namespace = addressed(request)
        return web.json_response({"models": sorted(n for ns, n in map(split, self.gw.states) if ns == namespace)})

    def _view(self, state: ServingState) -> dict:
        revisions = []
        for rev in state.revisions:
            pool = self.gw.pools.get(rev.id)
            requests, errors = self.gw.metrics.counts(rev.id)
            revisions.append(
                {
                    **asdict(rev),
                    "replicas": len(pool.replicas) if pool else 0,
                    "inflight": pool.inflight if pool else 0,
                    "requests": requests,
                    "errors": errors,
                }
            )
        return {"model": split(state.model)[1], "revisions": revisions, "traffic": [asdict(t) for t in state.traffic]}
