"""Progressive delivery: the gateway promotes a good canary, rolls back a failing one, keeps judging after a
restart, and tells the broker (a real in-process BrokerServer) with a model.deployed event under the deploying run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from aiohttp import ClientSession

from eventing.broker import BrokerServer
from eventing.events import PARENTSPAN, TRACEPARENT, new_runid, new_traceparent
from functions.contract import MODEL_DEPLOYED
from infra.errors import InvalidRequest
from infra.settings import load_settings
from serving.client import ServingClient
from serving.gateway import Gateway
from serving.registry import ModelRegistry
from serving.rollout import PROMOTE, ROLLBACK, WAIT, RolloutPolicy, judge_canary
from tests.eventually import eventually
from tests.scrape import parse, value
from tests.serving.helpers import failing_onnx, infer_body, mlp_onnx

BODY = infer_body(np.ones((1, 64), np.float32))
ROLLOUT = {"promote_after_requests": 20, "max_error_rate": 0.05}


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[BrokerServer]:
    settings = load_settings(env={"KNFLOW_DATA_DIR": str(tmp_path / "broker")})
    async with BrokerServer(settings, [], sources=[], port=0) as server:
        yield server


async def send_to_canary(gateway: Gateway, n: int) -> list[int]:
    """``n`` requests routed straight to the canary (by its tag); their statuses."""
    target = f"http://127.0.0.1:{gateway.port}/v2/models/digits/infer"
    statuses = []
    async with ClientSession() as http:
        for _ in range(n):
            async with http.post(target, data=BODY, headers={"x-knflow-tag": "canary"}) as r:
                statuses.append(r.status)
    return statuses


def announce(runid: str, trace: str | None = None) -> dict:
    extensions = {"runid": runid, "pipeline": "lifecycle", **({TRACEPARENT: trace} if trace else {})}
    return {"type": MODEL_DEPLOYED, "extensions": extensions}


async def deployed_events(broker: BrokerServer, runid: str) -> list:
    events, _ = await broker.log.history(after=None, limit=10, runid=runid, type=MODEL_DEPLOYED)
    return [e for _, e in events]


def test_one_rule_judges_canaries_for_deploy_and_serving() -> None:
    from functions import deploy

    policy = RolloutPolicy(promote_after_requests=20, max_error_rate=0.05)
    assert deploy.judge_canary is judge_canary
    assert [judge_canary(policy, r, e) for r, e in [(5, 0), (20, 1), (10, 2), (40, 1)]] == [
        WAIT, PROMOTE, ROLLBACK, PROMOTE,
    ]  # fmt: skip


async def test_canary_is_promoted_after_good_requests_even_across_a_restart(  # type: ignore[no-untyped-def]
    start_gateway, registry: ModelRegistry, broker: BrokerServer
) -> None:
    registry.register("digits", mlp_onnx(0))
    registry.register("digits", mlp_onnx(1))
    registry.set_alias("digits", "production", 1, actor="test")
    gateway = await start_gateway(broker_port=broker.port)
    client = ServingClient(f"http://127.0.0.1:{gateway.port}")
    runid, trace = new_runid(), new_traceparent()
    await asyncio.to_thread(client.deploy, "digits", 1)
    with pytest.raises(InvalidRequest):
        await asyncio.to_thread(client.deploy, "digits", 2, rollout=ROLLOUT)  # a rollout needs a canary
    canary = await asyncio.to_thread(
        client.deploy, "digits", 2, percent=10, tag="canary", rollout=ROLLOUT, announce=announce(runid, trace)
    )
    assert await send_to_canary(gateway, 5) == [200] * 5
    await gateway.stop()

    restarted = await start_gateway(broker_port=broker.port)
    kept = restarted.states["digits"].canary
    assert kept is not None and kept.policy == RolloutPolicy(20, 0.05) and kept.announce.extensions["runid"] == runid
    assert await send_to_canary(restarted, 20) == [200] * 20
    client = ServingClient(f"http://127.0.0.1:{restarted.port}")

    async def promoted() -> bool:
        view = await asyncio.to_thread(client.describe, "digits")
        return view["traffic"] == [{"revision": canary["revision"], "percent": 100, "tag": None}]

    await eventually(promoted)
    assert registry.aliases("digits")["production"] == 2
    assert "after 20 requests, 0 errors" in registry.audit("digits")[-1]["reason"]
    [event] = await eventually(lambda: deployed_events(broker, runid))
    assert event.get_extension(TRACEPARENT).split("-")[1] == trace.split("-")[1]  # the deploying run's trace
    assert event.get_extension(PARENTSPAN) == trace.split("-")[2]  # under the deploy, in the run's waterfall
    data = event.get_data()
    assert data["revision"] == canary["revision"] and data["traffic_percent"] == 100 and not data["canary"]
    assert data["decision"].startswith("promoted after") and data["endpoint"].endswith("/v2/models/digits/infer")

    async def settled() -> bool:  # the notice is dropped from the saved state just after the broker took it
        state = restarted.states["digits"]
        return state.canary is None and not state.notices

    await eventually(settled)
    async with ClientSession() as http, http.get(f"http://127.0.0.1:{restarted.port}/metrics") as r:
        metrics = await r.text()
    assert value(parse(metrics), "knflow_rollout_decisions_total", model="digits", decision="promote") == 1


async def test_failing_canary_is_rolled_back_and_the_notice_waits_for_the_broker(  # type: ignore[no-untyped-def]
    start_gateway, registry: ModelRegistry, tmp_path: Path
) -> None:
    registry.register("digits", mlp_onnx(0))
    registry.register("digits", failing_onnx())
    settings = load_settings(env={"KNFLOW_DATA_DIR": str(tmp_path / "broker")})
    broker = BrokerServer(settings, [], sources=[], port=0)
    await broker.start()
    port = broker.port
    await broker.stop()  # the broker is down when the decision is taken
    gateway = await start_gateway(broker_port=port)
    client = ServingClient(f"http://127.0.0.1:{gateway.port}")
    runid = new_runid()
    await asyncio.to_thread(client.deploy, "digits", 1)
    canary = await asyncio.to_thread(
        client.deploy, "digits", 2, percent=20, tag="canary", rollout=ROLLOUT, announce=announce(runid)
    )
    statuses = await send_to_canary(gateway, 4)
    assert statuses == [500] * 4, statuses  # ONNX Runtime fails each request

    async def rolled_back() -> bool:
        view = await asyncio.to_thread(client.describe, "digits")
        return view["traffic"] == [{"revision": "digits-00001", "percent": 100, "tag": None}]

    await eventually(rolled_back)
    record = registry.audit("digits")[-1]
    assert record["action"] == "rollback" and record["actor"] == "serving" and "error rate" in record["reason"]
    assert "production" not in registry.aliases("digits")
    await asyncio.sleep(0.3)  # a few ticks pass failing to publish: the notice must stay pending meanwhile
    assert len(gateway.states["digits"].notices) == 1

    broker = BrokerServer(settings, [], sources=[], port=port)
    async with broker:
        [event] = await eventually(lambda: deployed_events(broker, runid))
        data = event.get_data()
        assert data["revision"] == canary["revision"] and data["traffic_percent"] == 0
        assert data["decision"].startswith("rolled back: error rate")

        async def delivered() -> bool:  # dropped from the saved state just after the broker took it
            return not gateway.states["digits"].notices

        await eventually(delivered)


def test_a_single_error_never_rolls_a_canary_back_two_do_once_the_rate_is_above_the_limit() -> None:
    policy = RolloutPolicy(promote_after_requests=1000, max_error_rate=0.05)
    assert judge_canary(policy, requests=10, errors=1) == WAIT  # a 10 % rate, but one error is not evidence
    assert judge_canary(policy, requests=10, errors=2) == ROLLBACK
    assert judge_canary(policy, requests=40, errors=2) == WAIT  # exactly 5 %: not above the limit
    assert judge_canary(policy, requests=39, errors=2) == ROLLBACK  # 5.1 %
    assert judge_canary(policy, requests=1000, errors=0) == PROMOTE
    assert judge_canary(policy, requests=999, errors=0) == WAIT
