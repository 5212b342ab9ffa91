"""The gateway's control API (``/v1``): deploy revisions, split traffic, roll back, inspect.

    POST /v1/models/{name}/revisions  {"version": 3 | "production", "batching": {"max_batch": 8, "max_delay_ms": 2},
                                       "intra_op_threads": 1, "percent": 10, "tag": "canary",
                                       "rollout": {"promote_after_requests": 100, "max_error_rate": 0.05},
                                       "runid": "run-...", "traceparent": "00-..."}
         -> 201 {"revision": "digits-00002", "version": 3, "endpoint": "http://H:P/v2/models/digits/infer"}
         (the first revision takes 100 %; with "percent" the new revision takes that share, the rest
          stays on the current main revision; otherwise it takes no traffic until PUT .../traffic;
          with "rollout" too, the gateway judges the canary on its tick and promotes or rolls it back,
          see serving/rollout.py — "runid"/"traceparent" name the run told about it)
    PUT  /v1/models/{name}/traffic    {"traffic": [{"revision": r, "percent": p, "tag": t}, ...]}
    POST /v1/models/{name}/rollback   -> the previous traffic split
    GET  /v1/models/{name}            revisions (with replicas, in-flight, requests, errors), traffic
    GET  /v1/models                   {"models": [...]}

A tagged target is reached directly with the request header ``x-knflow-tag: <tag>``.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, replace
from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from infra.errors import InvalidRequest, NotFound
from serving.revisions import (
    Batching,
    ServingState,
    TrafficTarget,
    add_revision,
    rollback,
    set_traffic,
)
from serving.rollout import Canary, RolloutPolicy, parse_rollout
from serving.runtime import host_threads

if TYPE_CHECKING:
    from serving.gateway import Gateway


async def _json(request: web.Request) -> dict:
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("body must be a JSON object")
    return body


def _rollout(body: dict) -> RolloutPolicy | None:
    """The canary's rollout policy, if the body asks for one (only with a canary's ``percent`` < 100)."""
    if body.get("rollout") is None:
        return None
    if not 0 < int(body.get("percent", 100)) < 100:
        raise InvalidRequest('"rollout" needs a canary: a "percent" between 1 and 99')
    return parse_rollout(body["rollout"])


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

    async def deploy(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await _json(request)
        card = await asyncio.to_thread(self.gw.registry.get, name, body.get("version", "latest"))
        try:
            batching = Batching(**body.get("batching", {}))
        except TypeError as exc:
            raise InvalidRequest(f"batching: {exc}") from None
        rollout = _rollout(body)
        serving = self.gw.settings.serving
        threads = host_threads(int(body.get("intra_op_threads", serving.intra_op_threads)), serving.max_replicas)
        async with self.gw.state_lock:
            state = self.gw.states.get(name, ServingState(model=name))
            main = max(state.traffic, key=lambda t: t.percent).revision if state.traffic else None
            state, rev = add_revision(state, card.version, batching, threads)
            if "percent" in body and main is not None:
                percent = int(body["percent"])
                targets = [TrafficTarget(main, 100 - percent), TrafficTarget(rev.id, percent, body.get("tag"))]
                state = set_traffic(state, targets)
                if rollout is not None:
                    canary = Canary(rev.id, rev.version, rollout, body.get("runid"), body.get("traceparent"))
                    state = replace(state, canary=canary)
            await self.gw.commit(state)
        endpoint = f"http://{request.host}/v2/models/{name}/infer"
        return web.json_response({"revision": rev.id, "version": rev.version, "endpoint": endpoint}, status=201)

    async def traffic(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await _json(request)
        try:
            targets = [TrafficTarget(t["revision"], int(t["percent"]), t.get("tag")) for t in body["traffic"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidRequest(f'expected {{"traffic": [{{"revision", "percent", "tag"}}]}}: {exc}') from None
        async with self.gw.state_lock:
            state = set_traffic(self.gw.state(name), targets)
            await self.gw.commit(state)
        return web.json_response(self._view(state))

    async def rollback(self, request: web.Request) -> web.Response:
        async with self.gw.state_lock:
            state = rollback(self.gw.state(request.match_info["name"]))
            await self.gw.commit(state)
        return web.json_response(self._view(state))

    async def describe(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.gw.states:
            raise NotFound(f"model {name!r} is not deployed")
        return web.json_response(self._view(self.gw.states[name]))

    async def list_models(self, request: web.Request) -> web.Response:
        return web.json_response({"models": sorted(self.gw.states)})

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
        return {"model": state.model, "revisions": revisions, "traffic": [asdict(t) for t in state.traffic]}
