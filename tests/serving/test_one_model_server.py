"""One model's server (the gateway with ``serving.model``), as a model's Knative Service runs it: ready once its
replica has loaded the model, serves that version alone, counts requests in /metrics, has no control API."""

from __future__ import annotations

import os
import signal

import numpy as np
import onnxruntime as ort
import orjson
import pytest

from infra.errors import ConfigError
from infra.settings import load_settings
from serving.knserving import request_counts
from tests.eventually import eventually
from tests.serving.helpers import infer_body, mlp_onnx

SPEC = [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
OUT = [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}, {"name": "probabilities", "datatype": "FP32",
       "shape": [-1, 10]}]  # fmt: skip
X = np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 64)


async def test_one_model_server_serves_its_version_alone(start_gateway, registry, http):
    for seed in (1, 2):
        registry.register("digits", mlp_onnx(seed), inputs=SPEC, outputs=OUT)
    registry.register("other", mlp_onnx(3), inputs=SPEC, outputs=OUT)
    gateway = await start_gateway(model="digits", model_version=2, max_replicas=1)
    base = f"http://127.0.0.1:{gateway.port}"

    async def ready() -> bool:
        async with http.get(f"{base}/v2/health/ready") as r:
            return r.status == 200

    await eventually(ready, timeout=30, what="the model's replica to load")  # before any request: Knative waits
    assert len(gateway.pools["digits-v2"].replicas) == 1
    async with http.post(f"{base}/v2/models/digits/infer", data=infer_body(X)) as r:
        assert r.status == 200
        answer = orjson.loads(await r.read())
    expected = ort.InferenceSession(mlp_onnx(2)).run(["probabilities"], {"input": X})[0]
    probabilities = next(o for o in answer["outputs"] if o["name"] == "probabilities")["data"]
    np.testing.assert_allclose(probabilities, expected.ravel(), rtol=1e-5)
    for path in ("/v2/models/other/infer", "/v2/models/digits/versions/1/infer"):
        async with http.post(base + path, data=infer_body(X)) as r:
            assert r.status == 404, path
    async with http.get(f"{base}/v1/models") as r:  # the Knative Service's traffic block is the split
        assert r.status == 404
    async with http.get(f"{base}/metrics") as r:
        assert request_counts(await r.text()) == (1, 0)


async def test_a_replica_that_exits_is_started_again_by_the_readiness_probe(start_gateway, registry, http):
    registry.register("digits", mlp_onnx(1), inputs=SPEC, outputs=OUT)
    gateway = await start_gateway(model="digits", model_version=1, max_replicas=1)
    pool = gateway.pools["digits-v1"]
    await eventually(lambda: pool.replicas, timeout=30, what="the replica")
    pid = pool.replicas[0].pid
    os.kill(pid, signal.SIGKILL)
    base = f"http://127.0.0.1:{gateway.port}"

    async def probe() -> int:
        async with http.get(f"{base}/v2/health/ready") as r:
            return r.status

    await eventually(lambda: not pool.replicas, timeout=10, what="the replica to be seen gone")
    assert await probe() == 503
    await eventually(lambda: pool.replicas and pool.replicas[0].pid != pid, timeout=30, what="a new replica")
    assert await probe() == 200


def test_a_model_without_a_version_is_refused():
    with pytest.raises(ConfigError, match="KNFLOW_SERVING_MODEL_VERSION"):
        load_settings(env={"KNFLOW_SERVING_MODEL": "digits"})
    with pytest.raises(ConfigError, match="KNFLOW_SERVING_TARGET='cluster': expected local or knative"):
        load_settings(env={"KNFLOW_SERVING_TARGET": "cluster"})
    with pytest.raises(ConfigError, match="needs KNFLOW_SERVING_MODEL_TEMPLATE"):
        load_settings(env={"KNFLOW_SERVING_TARGET": "knative"})
