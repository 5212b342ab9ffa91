"""Request isolation: nothing a client sends kills a replica or fails another client's request.

Each case here killed a replica (and the requests in flight beside it) before framing and parsing were
made robust: bodies of 256 KB and more, malformed fields, shapes that overflow, control bodies with
wrong types, and client errors counted against a canary.
"""

from __future__ import annotations

import asyncio
import os
import signal

import numpy as np
import orjson
import pytest
from aiohttp import ClientSession

from serving.gateway import Gateway
from serving.registry import ModelRegistry
from tests.eventually import eventually
from tests.serving.helpers import infer_body, mlp_onnx, slow_onnx

GOOD = {"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}


def url(gateway: Gateway, path: str = "/v2/models/digits/infer") -> str:
    return f"http://127.0.0.1:{gateway.port}{path}"


@pytest.fixture
async def digits(start_gateway, registry: ModelRegistry) -> Gateway:  # type: ignore[no-untyped-def]
    registry.register("digits", mlp_onnx(0))
    gateway = await start_gateway()
    async with ClientSession() as http, http.post(url(gateway, "/v1/models/digits/revisions"), json={}) as r:
        assert r.status == 201, await r.text()
    return gateway


def replica_pids(gateway: Gateway, revision: str = "digits-00001") -> set[int]:
    return {replica.pid for replica in gateway.pools[revision].replicas}


def expected_logits(registry: ModelRegistry, gateway: Gateway, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    path = registry.fetch("digits", 1, gateway.cache_dir)
    return ort.InferenceSession(str(path)).run(["logits"], {"input": x})[0]


@pytest.mark.parametrize("size", [256 * 1024, 1024 * 1024, 15 * 1024 * 1024])
async def test_large_bodies_are_answered_with_correct_outputs(
    digits: Gateway, registry: ModelRegistry, size: int
) -> None:
    rng = np.random.default_rng(size)
    x = (rng.integers(0, 17, (1, 64)) / 16).astype(np.float32)
    rows = 1
    while len(infer_body(np.repeat(x, rows * 2, axis=0))) <= size:
        rows *= 2
    x = (rng.integers(0, 17, (rows, 64)) / 16).astype(np.float32)
    while len(body := infer_body(x)) < size:  # grow to at least the size asked for
        x = np.concatenate([x, x[: max(1, (size - len(body)) // 400)]])
    assert size <= len(body) < 16 * 1024 * 1024
    async with ClientSession() as http, http.post(url(digits), data=body) as r:
        assert r.status == 200, (await r.read())[:300]
        out = orjson.loads(await r.read())
    logits = next(o for o in out["outputs"] if o["name"] == "logits")
    assert logits["shape"] == [len(x), 10]
    got = np.asarray(logits["data"], np.float32).reshape(len(x), 10)
    np.testing.assert_allclose(got, expected_logits(registry, digits, x), rtol=1e-5, atol=1e-6)


MALFORMED = {
    "outputs is a number": {"inputs": [GOOD], "outputs": 5},
    "outputs item without a name": {"inputs": [GOOD], "outputs": [{"name": 7}]},
    "datatype is a list": {"inputs": [{**GOOD, "datatype": ["FP32"]}]},
    "name is a list": {"inputs": [{**GOOD, "name": ["x"]}]},
    "shape overflows": {"inputs": [{**GOOD, "shape": [0, 2**62, 2**62], "data": []}]},
    "shape with a bool": {"inputs": [{**GOOD, "shape": [True, 64]}]},
    "int8 out of range": {"inputs": [{**GOOD, "datatype": "INT8", "data": [300] * 64}]},
    "id is an object": {"id": {"a": 1}, "inputs": [GOOD]},
    "parameters is a string": {"inputs": [GOOD], "parameters": "x"},
    "inputs item is a string": {"inputs": ["input"]},
    "deeply nested BYTES": {"inputs": [{**GOOD, "datatype": "BYTES", "shape": [1], "data": [[[[["a"]]]]]}]},
    "BYTES with a number": {"inputs": [{**GOOD, "datatype": "BYTES", "shape": [1], "data": [5]}]},
    "input given twice": {"inputs": [GOOD, GOOD]},
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_each_malformed_request_is_400_while_good_requests_all_succeed(digits: Gateway, case: str) -> None:
    good = infer_body(np.full((1, 64), 0.5, np.float32))
    async with ClientSession() as http:
        async with http.post(url(digits), data=good) as r:
            assert r.status == 200
        (pid,) = replica_pids(digits)

        async def post(body: bytes) -> tuple[int, dict]:
            async with http.post(url(digits), data=body) as r:
                return r.status, orjson.loads(await r.read())

        bad = orjson.dumps(MALFORMED[case])
        answers = await asyncio.gather(*(post(good) for _ in range(100)), post(bad), *(post(good) for _ in range(100)))
    bad_status, bad_answer = answers[100]
    assert bad_status == 400, bad_answer
    assert bad_answer["error"]
    assert [status for i, (status, _) in enumerate(answers) if i != 100] == [200] * 200
    assert pid in replica_pids(digits)  # the load may have added a replica; none was lost


async def test_a_canary_that_receives_only_client_errors_is_not_rolled_back(
    start_gateway, registry: ModelRegistry
) -> None:  # type: ignore[no-untyped-def]
    registry.register("digits", mlp_onnx(0))
    registry.register("digits", mlp_onnx(1))
    gateway = await start_gateway()
    rollout = {"promote_after_requests": 1000, "max_error_rate": 0.05}
    async with ClientSession() as http:
        await http.post(url(gateway, "/v1/models/digits/revisions"), json={"version": 1})
        async with http.post(
            url(gateway, "/v1/models/digits/revisions"),
            json={"version": 2, "percent": 10, "tag": "canary", "rollout": rollout},
        ) as r:
            assert r.status == 201, await r.text()
        statuses = []
        for case in ("outputs is a number", "datatype is a list", "name is a list", "shape overflows") * 5:
            body = orjson.dumps(MALFORMED[case])
            async with http.post(url(gateway), data=body, headers={"x-knflow-tag": "canary"}) as r:
                statuses.append(r.status)
        assert statuses == [400] * 20
        await asyncio.sleep(gateway.settings.serving.autoscale_tick_s * 5)  # several judging ticks pass
        async with http.get(url(gateway, "/v1/models/digits")) as r:
            view = await r.json()
    assert gateway.states["digits"].canary is not None
    assert {t["revision"]: t["percent"] for t in view["traffic"]} == {"digits-00001": 90, "digits-00002": 10}
    canary = next(rev for rev in view["revisions"] if rev["id"] == "digits-00002")
    assert canary["requests"] == 20 and canary["errors"] == 0


async def test_a_dead_replica_fails_only_the_request_it_was_running(start_gateway, registry: ModelRegistry) -> None:  # type: ignore[no-untyped-def]
    """Killed mid-run: the running request gets 503; those queued behind it are sent to a fresh replica."""
    registry.register("slow", slow_onnx())
    gateway = await start_gateway()
    target = url(gateway, "/v2/models/slow/infer")
    body = infer_body(np.ones((1, 64), np.float32))
    async with ClientSession() as http:
        await http.post(url(gateway, "/v1/models/slow/revisions"), json={})
        async with http.post(target, data=body) as r:
            assert r.status == 200
        (replica,) = gateway.pools["slow-00001"].replicas

        async def post() -> int:
            async with http.post(target, data=body) as r:
                await r.read()
                return r.status

        calls = [asyncio.ensure_future(post()) for _ in range(4)]
        await eventually(lambda: replica._started and replica.inflight == 4, 10, "the first request to start")
        os.kill(replica.pid, signal.SIGKILL)
        statuses = await asyncio.gather(*calls)
    assert sorted(statuses) == [200, 200, 200, 503]
    assert gateway.pools["slow-00001"].replicas[0].pid != replica.pid
