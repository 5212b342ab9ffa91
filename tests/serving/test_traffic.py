"""Revisions and traffic: canary split, tagged routes, rollback, persisted state restored by a new gateway."""

from __future__ import annotations

import asyncio
from collections import Counter

import numpy as np
import orjson
import pytest
from aiohttp import ClientSession

from infra.errors import InvalidRequest, NotFound
from serving.client import ServingClient
from serving.gateway import Gateway
from serving.registry import ModelRegistry
from tests.serving.helpers import infer_body, mlp_onnx

BODY = infer_body(np.ones((1, 64), np.float32))


async def versions_served(gateway: Gateway, n: int, headers: dict | None = None) -> Counter:
    """Send ``n`` requests (16 at a time); count the model version that answered each."""
    counts: Counter = Counter()
    target = f"http://127.0.0.1:{gateway.port}/v2/models/digits/infer"
    async with ClientSession() as http:

        async def worker(k: int) -> None:
            for _ in range(k):
                async with http.post(target, data=BODY, headers=headers) as r:
                    assert r.status == 200
                    counts[orjson.loads(await r.read())["model_version"]] += 1

        await asyncio.gather(*(worker(n // 16 + (i < n % 16)) for i in range(16)))
    return counts


@pytest.fixture
async def two_versions(start_gateway, registry: ModelRegistry) -> tuple[Gateway, ServingClient]:  # type: ignore[no-untyped-def]
    registry.register("digits", mlp_onnx(0))
    registry.register("digits", mlp_onnx(1))
    gateway = await start_gateway()
    client = ServingClient(f"http://127.0.0.1:{gateway.port}")
    first = await asyncio.to_thread(client.deploy, "digits", 1)
    assert first["revision"] == "digits-00001" and first["endpoint"].endswith("/v2/models/digits/infer")
    return gateway, client


async def test_canary_split_is_honoured_and_rollback_restores_all_traffic(two_versions) -> None:  # type: ignore[no-untyped-def]
    gateway, client = two_versions
    canary = await asyncio.to_thread(client.deploy, "digits", 2, percent=20, tag="canary")
    assert canary["revision"] == "digits-00002"
    counts = await versions_served(gateway, 1000)
    assert sum(counts.values()) == 1000
    assert abs(counts["2"] / 10 - 20) <= 5, counts
    tagged = await versions_served(gateway, 32, {"x-knflow-tag": "canary"})
    assert tagged == Counter({"2": 32})
    view = await asyncio.to_thread(client.describe, "digits")
    per_rev = {r["id"]: r for r in view["revisions"]}
    assert per_rev["digits-00002"]["requests"] == counts["2"] + 32
    assert per_rev["digits-00001"]["errors"] == 0
    await asyncio.to_thread(client.rollback, "digits")
    assert await versions_served(gateway, 200) == Counter({"1": 200})


async def test_traffic_put_promotes_and_validates(two_versions) -> None:  # type: ignore[no-untyped-def]
    gateway, client = two_versions
    await asyncio.to_thread(client.deploy, "digits", 2)  # no percent: takes no traffic yet
    assert await versions_served(gateway, 50) == Counter({"1": 50})
    await asyncio.to_thread(client.promote, "digits", "digits-00002")
    assert await versions_served(gateway, 50) == Counter({"2": 50})
    with pytest.raises(InvalidRequest, match="sum to 90"):
        await asyncio.to_thread(
            client.set_traffic,
            "digits",
            [{"revision": "digits-00001", "percent": 40}, {"revision": "digits-00002", "percent": 50}],
        )
    with pytest.raises(NotFound):
        await asyncio.to_thread(client.set_traffic, "digits", [{"revision": "digits-00042", "percent": 100}])
    with pytest.raises(NotFound):
        await asyncio.to_thread(client.deploy, "digits", 7)
    await asyncio.to_thread(client.rollback, "digits")
    assert await versions_served(gateway, 20) == Counter({"1": 20})


async def test_restarted_gateway_restores_revisions_and_traffic(two_versions, start_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway, client = two_versions
    await asyncio.to_thread(client.deploy, "digits", 2, percent=30, tag="canary")
    await gateway.stop()
    restarted = await start_gateway()
    client2 = ServingClient(f"http://127.0.0.1:{restarted.port}")
    view = await asyncio.to_thread(client2.describe, "digits")
    assert [(t["revision"], t["percent"], t["tag"]) for t in view["traffic"]] == [
        ("digits-00001", 70, None),
        ("digits-00002", 30, "canary"),
    ]
    assert await asyncio.to_thread(client2.models) == ["digits"]
    assert await versions_served(restarted, 16, {"x-knflow-tag": "canary"}) == Counter({"2": 16})
    out = await asyncio.to_thread(client2.infer, "digits", {"input": np.zeros((2, 64), np.float32)}, tag="canary")
    assert out["probabilities"].shape == (2, 10)


async def test_batching_revision_answers_each_request_with_its_own_rows(start_gateway, registry: ModelRegistry) -> None:  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    registry.register("digits", mlp_onnx(0))
    gateway = await start_gateway()
    client = ServingClient(f"http://127.0.0.1:{gateway.port}")
    await asyncio.to_thread(client.deploy, "digits", 1, batching={"max_batch": 16, "max_delay_ms": 5})
    path = registry.fetch("digits", 1, gateway.cache_dir)
    session = ort.InferenceSession(str(path))
    rng = np.random.default_rng(0)
    xs = [rng.random((1 + i % 3, 64), dtype=np.float32) for i in range(48)]
    target = f"http://127.0.0.1:{gateway.port}/v2/models/digits/infer"
    async with ClientSession() as http:

        async def one(i: int) -> int:
            async with http.post(target, data=infer_body(xs[i], id=str(i))) as r:
                out = orjson.loads(await r.read())
            assert out.get("id") == str(i), out
            logits = next(o for o in out["outputs"] if o["name"] == "logits")
            expected = session.run(["logits"], {"input": xs[i]})[0]
            np.testing.assert_allclose(
                np.array(logits["data"]).reshape(logits["shape"]), expected, rtol=1e-5, atol=1e-6
            )

        await asyncio.gather(*(one(i) for i in range(48)))


async def test_serving_state_and_models_live_in_s3_too(start_gateway, s3_server) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import make_s3_store

    store = make_s3_store(s3_server)
    ModelRegistry(store).register("digits", mlp_onnx(0))
    ModelRegistry(store).register("digits", mlp_onnx(1))
    gateway = await start_gateway(store=store)
    client = ServingClient(f"http://127.0.0.1:{gateway.port}")
    await asyncio.to_thread(client.deploy, "digits", 1)
    await asyncio.to_thread(client.deploy, "digits", 2, percent=50, tag="canary")
    assert store.exists("serving/digits/state.json")
    await gateway.stop()
    restarted = await start_gateway(store=store)
    assert await versions_served(restarted, 16, {"x-knflow-tag": "canary"}) == Counter({"2": 16})


async def test_async_client_deploys_promotes_and_reports_errors(start_gateway, registry: ModelRegistry) -> None:  # type: ignore[no-untyped-def]
    from serving.client import AsyncServingClient

    registry.register("digits", mlp_onnx(0))
    registry.register("digits", mlp_onnx(1))
    gateway = await start_gateway()
    async with AsyncServingClient(f"http://127.0.0.1:{gateway.port}") as client:
        assert (await client.deploy("digits", 1))["revision"] == "digits-00001"
        assert (await client.deploy("digits", 2, percent=10, tag="canary"))["revision"] == "digits-00002"
        view = await client.promote("digits", "digits-00002")
        assert view["traffic"] == [{"revision": "digits-00002", "percent": 100, "tag": None}]
        assert await client.models() == ["digits"]
        with pytest.raises(NotFound):
            await client.describe("nope")
    assert await versions_served(gateway, 16) == Counter({"2": 16})
