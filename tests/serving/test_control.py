"""The /v1 control API checks its bodies: every wrong type or range is a 400 naming the field, never a 500,
and nothing it accepts leaves a revision that can never start."""

from __future__ import annotations

import orjson
import pytest
from aiohttp import ClientSession

from serving.gateway import Gateway
from serving.registry import ModelRegistry
from tests.serving.helpers import mlp_onnx


@pytest.fixture
async def gateway(start_gateway, registry: ModelRegistry) -> Gateway:  # type: ignore[no-untyped-def]
    registry.register("digits", mlp_onnx(0))
    registry.register("digits", mlp_onnx(1))
    gateway = await start_gateway()
    status, answer = await call(gateway, "POST", "/v1/models/digits/revisions", {})
    assert status == 201, answer
    return gateway


async def call(
    gateway: Gateway, method: str, path: str, body: object, headers: dict[str, str] | None = None
) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    url = f"http://127.0.0.1:{gateway.port}{path}"
    async with ClientSession() as http, http.request(method, url, data=data, headers=headers) as r:
        return r.status, orjson.loads(await r.read())


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"percent": "abc"}, "percent"),
        ({"percent": 150}, "percent"),
        ({"percent": True}, "percent"),
        ({"intra_op_threads": {}}, "intra_op_threads"),
        ({"intra_op_threads": -1}, "intra_op_threads"),
        ({"version": [1]}, "version"),
        ({"version": 0}, "version"),
        ({"batching": {"max_batch": -5}}, "batching.max_batch"),
        ({"batching": {"max_batch": "x"}}, "batching.max_batch"),
        ({"batching": {"max_delay_ms": -1}}, "batching.max_delay_ms"),
        ({"batching": {"size": 3}}, "batching.size"),
        ({"batching": 4}, "batching"),
        ({"tag": "Not A Label"}, "tag"),
        ({"rollout": {"max_error_rate": 2}, "percent": 10}, "rollout.max_error_rate"),
        ({"rollout": {"promote_after_requests": "many"}, "percent": 10}, "rollout.promote_after_requests"),
        ({"rollout": {}}, "needs a canary"),
        ({"traceparent": "00-xyz"}, "traceparent"),
        ({"surprise": 1}, "surprise"),
        ([1, 2], "body"),
    ],
)
async def test_deploy_bodies_with_wrong_types_or_ranges_are_400_naming_the_field(
    gateway: Gateway, body: object, field: str
) -> None:
    status, answer = await call(gateway, "POST", "/v1/models/digits/revisions", body)
    assert status == 400, answer
    assert field in answer["error"]
    assert [r.id for r in gateway.states["digits"].revisions] == ["digits-00001"]  # nothing half-made


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"traffic": [{"revision": "digits-00001", "percent": "abc"}]}, "traffic.0.percent"),
        ({"traffic": [{"revision": ["digits-00001"], "percent": 100}]}, "traffic.0.revision"),
        ({"traffic": [{"percent": 100}]}, "traffic.0.revision"),
        ({"traffic": "all"}, "traffic"),
        ({"traffic": []}, "traffic"),
        ({}, "traffic"),
        (b"{not json", "not valid JSON"),
    ],
)
async def test_traffic_bodies_with_wrong_types_are_400_naming_the_field(
    gateway: Gateway, body: object, field: str
) -> None:
    status, answer = await call(gateway, "PUT", "/v1/models/digits/traffic", body)
    assert status == 400, answer
    assert field in answer["error"]


async def test_a_valid_batching_deploy_starts_and_answers(gateway: Gateway) -> None:
    body = {"version": 2, "batching": {"max_batch": 8, "max_delay_ms": 1}, "intra_op_threads": 1, "percent": 0}
    status, answer = await call(gateway, "POST", "/v1/models/digits/revisions", body)
    assert status == 201, answer
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64}
    async with (
        ClientSession() as http,
        http.post(f"http://127.0.0.1:{gateway.port}/v2/models/digits/versions/2/infer", json={"inputs": [tensor]}) as r,
    ):
        assert r.status == 200, await r.text()


async def test_a_deploy_asked_again_under_its_idempotency_key_makes_nothing_new(gateway: Gateway) -> None:
    body = {"version": 2, "percent": 20, "tag": "canary", "rollout": {"promote_after_requests": 500}}
    first = await call(gateway, "POST", "/v1/models/digits/revisions", body, {"Idempotency-Key": "deploy/evt-1"})
    assert first[0] == 201, first
    traffic = gateway.states["digits"].traffic
    again = await call(gateway, "POST", "/v1/models/digits/revisions", body, {"Idempotency-Key": "deploy/evt-1"})
    assert again == (200, first[1])
    state = gateway.states["digits"]
    assert [r.id for r in state.revisions] == ["digits-00001", "digits-00002"] and state.traffic == traffic
    other = await call(gateway, "POST", "/v1/models/digits/revisions", body, {"Idempotency-Key": "deploy/evt-2"})
    assert other[0] == 201 and other[1]["revision"] == "digits-00003"


async def test_an_idempotency_key_survives_a_gateway_restart(start_gateway, gateway: Gateway) -> None:  # type: ignore[no-untyped-def]
    first = await call(gateway, "POST", "/v1/models/digits/revisions", {"version": 2}, {"Idempotency-Key": "k"})
    await gateway.stop()
    restarted = await start_gateway()
    assert await call(restarted, "POST", "/v1/models/digits/revisions", {"version": 2}, {"Idempotency-Key": "k"}) == (
        200,
        {**first[1], "endpoint": first[1]["endpoint"].replace(str(gateway.port), str(restarted.port))},
    )


@pytest.mark.parametrize("key", ["", "has space", "é", "x" * 257])
async def test_a_malformed_idempotency_key_is_a_400(gateway: Gateway, key: str) -> None:
    status, answer = await call(gateway, "POST", "/v1/models/digits/revisions", {}, {"Idempotency-Key": key})
    assert status == 400 and "Idempotency-Key" in answer["error"]
    assert len(gateway.states["digits"].revisions) == 1
