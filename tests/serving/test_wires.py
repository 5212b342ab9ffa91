"""The same V2 conformance on every wire the gateway speaks: REST JSON, REST with binary tensor data (in and out,
or JSON in and binary out), gRPC with typed contents and gRPC with raw contents."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from aiohttp import ClientSession

from serving.gateway import Gateway
from serving.protocol import V2_TO_NUMPY
from serving.registry import ModelRegistry
from tests.serving.helpers import V2_TO_ONNX, identity_onnx, mlp_onnx
from tests.serving.test_v2 import SAMPLES
from tests.serving.wires import WIRES, infer

TYPED = tuple(dt for dt in V2_TO_ONNX if dt != "FP16")  # gRPC has no typed field for FP16: raw contents only


@pytest.fixture
async def gateway(start_gateway, registry: ModelRegistry) -> Gateway:  # type: ignore[no-untyped-def]
    registry.register("digits", mlp_onnx(0))
    registry.register("digits", mlp_onnx(1))
    registry.register("ident", identity_onnx())
    registry.register("typed", identity_onnx(TYPED))
    gateway = await start_gateway()
    async with ClientSession() as http:
        for name, body in (("digits", {"version": 1}), ("digits", {"version": 2, "percent": 0, "tag": "next"}),
                           ("ident", {}), ("typed", {})):  # fmt: skip
            async with http.post(f"http://127.0.0.1:{gateway.port}/v1/models/{name}/revisions", json=body) as r:
                assert r.status == 201, await r.text()
    return gateway


def expected(tmp_path: Path, x: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    (tmp_path / f"m{seed}.onnx").write_bytes(mlp_onnx(seed))
    session = ort.InferenceSession(str(tmp_path / f"m{seed}.onnx"))
    return dict(zip(["logits", "probabilities"], session.run(None, {"input": x}), strict=True))


@pytest.mark.parametrize("wire", WIRES)
async def test_every_datatype_round_trips(gateway: Gateway, http: ClientSession, wire: str) -> None:
    model, types = ("typed", TYPED) if wire == "grpc" else ("ident", tuple(V2_TO_ONNX))
    inputs = {f"x_{dt}": (dt, np.array(SAMPLES[dt], V2_TO_NUMPY[dt]).reshape(2, 3)) for dt in types}
    result = await infer(wire, http, gateway, model, inputs)
    assert result.status == 200, result.error
    assert result.binary == (wire not in ("json", "grpc"))
    assert set(result.outputs) == {f"y_{dt}" for dt in types}  # type: ignore[arg-type]
    for dt in types:
        datatype, array = result.outputs[f"y_{dt}"]  # type: ignore[index]
        assert datatype == dt and array.shape == (2, 3)
        np.testing.assert_array_equal(array, inputs[f"x_{dt}"][1], err_msg=f"{wire} {dt}")


@pytest.mark.parametrize("wire", WIRES)
async def test_requested_outputs_and_id_match_onnxruntime(
    gateway: Gateway, http: ClientSession, wire: str, tmp_path: Path
) -> None:
    x = np.random.default_rng(3).random((3, 64), dtype=np.float32)
    result = await infer(wire, http, gateway, "digits", {"input": ("FP32", x)}, ("probabilities",), rid="req-7")
    assert result.status == 200, result.error
    assert result.id == "req-7" and list(result.outputs) == ["probabilities"]  # type: ignore[arg-type]
    datatype, probabilities = result.outputs["probabilities"]  # type: ignore[index]
    assert datatype == "FP32" and probabilities.shape == (3, 10)
    np.testing.assert_allclose(probabilities, expected(tmp_path, x)["probabilities"], rtol=1e-5)


@pytest.mark.parametrize("rows", [1000, 20000])
@pytest.mark.parametrize("wire", WIRES)
async def test_large_batches_match_onnxruntime(
    gateway: Gateway, http: ClientSession, wire: str, rows: int, tmp_path: Path
) -> None:
    x = (np.random.default_rng(rows).integers(0, 17, (rows, 64)) / 16).astype(np.float32)
    result = await infer(wire, http, gateway, "digits", {"input": ("FP32", x)})
    assert result.status == 200, result.error
    want = expected(tmp_path, x)
    for name in ("logits", "probabilities"):
        np.testing.assert_allclose(result.outputs[name][1], want[name], rtol=1e-5, atol=1e-6)  # type: ignore[index]


@pytest.mark.parametrize("wire", WIRES)
async def test_tagged_route_and_version_reach_their_revision(
    gateway: Gateway, http: ClientSession, wire: str, tmp_path: Path
) -> None:
    x = np.ones((1, 64), np.float32)
    tagged = await infer(wire, http, gateway, "digits", {"input": ("FP32", x)}, ("logits",), tag="next")
    assert tagged.status == 200, tagged.error
    np.testing.assert_allclose(tagged.outputs["logits"][1], expected(tmp_path, x, 1)["logits"], rtol=1e-5)  # type: ignore[index]
    unknown = await infer(wire, http, gateway, "digits", {"input": ("FP32", x)}, tag="nope")
    assert unknown.status == 404 and "no route tagged 'nope'" in unknown.error


BAD = {
    "unknown input name": ({"x": ("FP32", np.zeros((1, 64), np.float32))}, (), "missing ['input'], unexpected ['x']"),
    "wrong datatype": ({"input": ("FP64", np.zeros((1, 64)))}, (), "datatype FP64 but the model takes FP32"),
    "wrong shape": ({"input": ("FP32", np.zeros((2, 32), np.float32))}, (), "shape [2, 32] but the model takes"),
    "unknown output": ({"input": ("FP32", np.zeros((1, 64), np.float32))}, ("nope",), "not outputs of the model"),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("wire", WIRES)
async def test_requests_the_model_cannot_take_are_400(
    gateway: Gateway, http: ClientSession, wire: str, case: str
) -> None:
    inputs, outputs, message = BAD[case]
    result = await infer(wire, http, gateway, "digits", inputs, outputs)  # type: ignore[arg-type]
    assert result.status == 400 and message in result.error, result


@pytest.mark.parametrize("wire", WIRES)
async def test_unknown_model_is_404(gateway: Gateway, http: ClientSession, wire: str) -> None:
    result = await infer(wire, http, gateway, "nope", {"input": ("FP32", np.zeros((1, 64), np.float32))})
    assert result.status == 404 and "model 'nope' is not deployed" in result.error


@pytest.mark.parametrize("wire", WIRES)
async def test_too_large_is_413_and_full_queue_is_503(
    start_gateway, registry: ModelRegistry, http: ClientSession, wire: str
) -> None:  # type: ignore[no-untyped-def]
    registry.register("digits", mlp_onnx())
    gateway = await start_gateway(max_request_bytes=64 * 1024, queue_limit=0)
    async with http.post(f"http://127.0.0.1:{gateway.port}/v1/models/digits/revisions", json={}) as r:
        assert r.status == 201
    big = await infer(wire, http, gateway, "digits", {"input": ("FP32", np.zeros((400, 64), np.float32))})
    assert big.status == 413, big
    full = await infer(wire, http, gateway, "digits", {"input": ("FP32", np.zeros((1, 64), np.float32))})
    assert full.status == 503 and "activation queue is full" in full.error
