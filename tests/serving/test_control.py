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


async def call(gateway: Gateway, method: str, path: str, body: object) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with ClientSession() as http, http.request(method, f"http://127.0.0.1:{gateway.port}{path}", data=data) as r:
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
