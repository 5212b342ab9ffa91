"""Serving fixtures: small real ONNX models, a registry on a file store, and an in-process gateway."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import onnx
import orjson
import pytest
from aiohttp import ClientSession
from onnx import TensorProto, helper, numpy_helper

from infra.settings import load_settings
from infra.store import ArtifactStore, open_store
from serving.autoscaler import ScalePolicy
from serving.gateway import Gateway
from serving.registry import ModelRegistry

V2_TO_ONNX = {
    "BOOL": TensorProto.BOOL, "INT8": TensorProto.INT8, "INT16": TensorProto.INT16, "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64, "UINT8": TensorProto.UINT8, "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32, "UINT64": TensorProto.UINT64, "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT, "FP64": TensorProto.DOUBLE, "BYTES": TensorProto.STRING,
}  # fmt: skip


def mlp_onnx(seed: int = 0, hidden: int = 32) -> bytes:
    """A digits-sized MLP (64 -> hidden -> 10, relu, softmax) with a dynamic batch dimension."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.normal(0, 0.2, (64, hidden)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(np.zeros(hidden, np.float32), "b1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.2, (hidden, 10)).astype(np.float32), "w2")
    b2 = numpy_helper.from_array(np.zeros(10, np.float32), "b2")
    nodes = [
        helper.make_node("MatMul", ["input", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["l0"]),
        helper.make_node("Add", ["l0", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10]),
        ],
        [w1, b1, w2, b2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def identity_onnx() -> bytes:
    """One Identity per V2 datatype: input ``x_<DT>`` comes back as ``y_<DT>``, shape [-1, 3]."""
    inputs = [helper.make_tensor_value_info(f"x_{dt}", t, ["n", 3]) for dt, t in V2_TO_ONNX.items()]
    outputs = [helper.make_tensor_value_info(f"y_{dt}", t, ["n", 3]) for dt, t in V2_TO_ONNX.items()]
    nodes = [helper.make_node("Identity", [f"x_{dt}"], [f"y_{dt}"]) for dt in V2_TO_ONNX]
    model = helper.make_model(helper.make_graph(nodes, "ident", inputs, outputs), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def infer_body(x: np.ndarray, **extra: object) -> bytes:
    return orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}], **extra})


@pytest.fixture
def file_store(tmp_path: Path) -> ArtifactStore:
    return open_store(f"file://{tmp_path / 'artifacts'}")


@pytest.fixture
def registry(file_store: ArtifactStore) -> ModelRegistry:
    return ModelRegistry(file_store)


GatewayFactory = Callable[..., "AsyncIterator[Gateway]"]


@pytest.fixture
async def start_gateway(tmp_path: Path, file_store: ArtifactStore):  # type: ignore[no-untyped-def]
    """Start in-process gateways (stopped at teardown): ``await start_gateway(policy=..., **serving_overrides)``."""
    started: list[Gateway] = []

    async def start(policy: ScalePolicy | None = None, **serving: object) -> Gateway:
        settings = load_settings(env={"KNFLOW_DATA_DIR": str(tmp_path), "KNFLOW_ARTIFACTS": file_store.url})
        settings = dataclasses.replace(
            settings, serving=dataclasses.replace(settings.serving, autoscale_tick_s=0.1, **serving)
        )
        gateway = Gateway(settings, file_store, policy=policy)
        await gateway.start(port=0)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        await gateway.stop()


@pytest.fixture
async def http() -> AsyncIterator[ClientSession]:
    async with ClientSession() as session:
        yield session


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until true or fail after ``timeout`` seconds."""
    import asyncio

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)
