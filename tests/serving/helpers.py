"""Helpers for serving tests: small real ONNX models and V2 request bodies."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import orjson
from aiohttp import ClientSession
from onnx import TensorProto, helper, numpy_helper

from infra.localservices import free_port
from infra.store import ArtifactStore, open_store
from serving.client import ServingClient
from serving.registry import ModelRegistry
from tests.eventually import eventually_sync
from tests.unguarded import UNGUARDED

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


def failing_onnx() -> bytes:
    """Takes the digits MLP's input but fails at run time: 64 features cannot be reshaped into rows of 3."""
    shape = numpy_helper.from_array(np.array([-1, 3], np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["input", "shape"], ["logits"])],
        "broken",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 3])],
        [shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def identity_onnx(datatypes: tuple[str, ...] = tuple(V2_TO_ONNX)) -> bytes:
    """One Identity per V2 datatype: input ``x_<DT>`` comes back as ``y_<DT>``, shape [-1, 3]."""
    types = {dt: V2_TO_ONNX[dt] for dt in datatypes}
    inputs = [helper.make_tensor_value_info(f"x_{dt}", t, ["n", 3]) for dt, t in types.items()]
    outputs = [helper.make_tensor_value_info(f"y_{dt}", t, ["n", 3]) for dt, t in types.items()]
    nodes = [helper.make_node("Identity", [f"x_{dt}"], [f"y_{dt}"]) for dt in types]
    model = helper.make_model(
        helper.make_graph(nodes, "ident", inputs, outputs), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def infer_body(x: np.ndarray, **extra: object) -> bytes:
    return orjson.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}], **extra}
    )


async def deploy_and_answer(http: ClientSession, base: str, body: bytes, model: str = "digits") -> None:
    """Deploy ``model``'s latest version on the gateway at ``base`` and see it answer one request of ``body``."""
    (await http.post(f"{base}/v1/models/{model}/revisions", json={})).release()
    async with http.post(f"{base}/v2/models/{model}/infer", data=body) as r:
        assert r.status == 200


def register_in_process(root: str, seed: int) -> int:
    """Register a model from a separate process (for the concurrency test)."""
    return ModelRegistry(open_store(f"file://{root}")).register("m", mlp_onnx(seed, hidden=4)).version


def register_and_go_down(root: str, key: str) -> None:
    """In a separate process: register a model under idempotency ``key`` and die (``os._exit``) after claiming its
    version number, before writing it (a register function's pod killed midway)."""
    import os

    registry = ModelRegistry(open_store(f"file://{root}"))
    registry._write_version = lambda *args, **kwargs: os._exit(3)  # type: ignore[method-assign]  # the kill point
    registry.register("m", mlp_onnx(1, hidden=4), idempotency_key=key)


def slow_onnx(size: int = 1200, depth: int = 8) -> bytes:
    """Takes the digits MLP's input and answers ``logits`` [batch, 10], but spends a noticeable time on it:
    ``depth`` products of [size, size] matrices (for tests that need a request to be running for a while)."""
    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array((rng.random((size, size), dtype=np.float32) - 0.5) / size, "w")
    shape = numpy_helper.from_array(np.array([size, size], np.int64), "square")
    nodes = [
        helper.make_node("ReduceSum", ["input"], ["total"], keepdims=1),
        helper.make_node("Expand", ["total", "square"], ["h0"]),
    ]
    for i in range(depth):
        nodes.append(helper.make_node("MatMul", [f"h{i}", "w"], [f"h{i + 1}"]))
    nodes += [
        helper.make_node("ReduceMean", [f"h{depth}"], ["row"], keepdims=1),  # [1, 1]
        helper.make_node("Slice", ["input", "zero", "ten", "one"], ["head"]),  # [batch, 10]
        helper.make_node("Add", ["head", "row"], ["logits"]),
    ]
    consts = [
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([10], np.int64), "ten"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
    ]
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [weights, shape, *consts],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def children_of(pid: int) -> set[int]:
    """The pids whose parent is ``pid`` (read from /proc)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.add(int(entry.name))
    return out


def answers(call) -> bool:  # type: ignore[no-untyped-def]
    """Whether ``call()`` returns without raising (for waiting until a server answers)."""
    try:
        call()
    except Exception:
        return False
    return True


@contextlib.contextmanager
def live_gateway(
    tmp: Path,
    store: ArtifactStore,
    models: tuple[str, ...],
    env_extra: dict[str, str] | None = None,
    log_level: str = "WARNING",
) -> Iterator[tuple[str, int, subprocess.Popen]]:
    """``python -m serving.gateway`` (on uvloop, as users run it) over ``store`` with version 1 of each of ``models``
    deployed; (HTTP base URL, gRPC port, process)."""
    port, grpc_port = free_port(), free_port()
    env = {**os.environ, "KNFLOW_DATA_DIR": str(tmp), "KNFLOW_ARTIFACTS": store.url, "KNFLOW_LOG_LEVEL": log_level,
           "KNFLOW_GATEWAY_PORT": str(port), "KNFLOW_GRPC_PORT": str(grpc_port), **UNGUARDED}  # fmt: skip
    env.update(env_extra or {})
    proc = subprocess.Popen([sys.executable, "-m", "serving.gateway"], env=env, cwd=Path(__file__).parents[2])
    base = f"http://127.0.0.1:{port}"
    try:
        client = ServingClient(base, timeout=10)
        eventually_sync(lambda: answers(client.models), 30, "the gateway to answer")
        for name in models:
            client.deploy(name, 1)
        yield base, grpc_port, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
