"""KServe V2 (Open Inference Protocol) conformance of the gateway over plain HTTP JSON, errors included."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import orjson
import pytest
from aiohttp import ClientSession

from serving.gateway import Gateway
from serving.registry import ModelRegistry
from tests.scrape import parse, value
from tests.serving.helpers import V2_TO_ONNX, identity_onnx, infer_body, mlp_onnx

SAMPLES = {
    "BOOL": [True, False, True, False, True, True],
    "INT8": [-128, 0, 127, 1, 2, 3],
    "INT16": [-32768, 32767, 0, 1, 2, 3],
    "INT32": [-(2**31), 2**31 - 1, 0, 1, 2, 3],
    "INT64": [-(2**63), 2**63 - 1, 0, 1, 2, 3],
    "UINT8": [0, 255, 1, 2, 3, 4],
    "UINT16": [0, 65535, 1, 2, 3, 4],
    "UINT32": [0, 2**32 - 1, 1, 2, 3, 4],
    "UINT64": [0, 2**64 - 1, 1, 2, 3, 4],
    "FP16": [0.5, -1.5, 2.0, 65504.0, 0.25, 0.0],
    "FP32": [0.5, -1.5, 3.25, 1e-3, 1e30, 0.0],
    "FP64": [0.1, -1e300, 3.141592653589793, 0.0, 1.0, 2.0],
    "BYTES": ["a", "héllo", "", "x y", "1", "zz"],
}


@pytest.fixture
async def gateway(start_gateway, registry: ModelRegistry) -> Gateway:  # type: ignore[no-untyped-def]
    registry.register("digits", mlp_onnx(0))
    registry.register("digits", mlp_onnx(1))
    registry.register("ident", identity_onnx())
    gateway = await start_gateway(max_request_bytes=64 * 1024)
    async with ClientSession() as http:
        for name, version in (("digits", 1), ("digits", 2), ("ident", 1)):
            response = await http.post(f"{url(gateway)}/v1/models/{name}/revisions", json={"version": version})
            assert response.status == 201, await response.text()
    return gateway


def url(gateway: Gateway) -> str:
    return f"http://127.0.0.1:{gateway.port}"


async def call(http: ClientSession, method: str, target: str, body: bytes | None = None) -> tuple[int, dict]:
    async with http.request(method, target, data=body) as response:
        return response.status, orjson.loads(await response.read())


async def test_health_and_server_metadata(gateway: Gateway, http: ClientSession) -> None:
    assert await call(http, "GET", f"{url(gateway)}/v2/health/live") == (200, {"live": True})
    assert await call(http, "GET", f"{url(gateway)}/v2/health/ready") == (200, {"ready": True})
    status, meta = await call(http, "GET", f"{url(gateway)}/v2")
    assert status == 200 and meta["name"] == "knflow"


async def test_model_metadata_by_name_and_version(gateway: Gateway, http: ClientSession) -> None:
    for path in ("/v2/models/digits", "/v2/models/digits/versions/2"):
        status, meta = await call(http, "GET", url(gateway) + path)
        assert status == 200
        assert meta["name"] == "digits" and meta["versions"] == ["1", "2"]
        assert meta["platform"] == "onnxruntime_onnx"
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
        assert [o["name"] for o in meta["outputs"]] == ["logits", "probabilities"]
    status, ready = await call(http, "GET", f"{url(gateway)}/v2/models/digits/versions/1/ready")
    assert status == 200 and ready["ready"] is True
    assert (await call(http, "GET", f"{url(gateway)}/v2/models/digits/ready"))[0] == 200


async def test_infer_matches_onnxruntime_and_echoes_id(gateway: Gateway, http: ClientSession, tmp_path: Path) -> None:
    import onnxruntime as ort

    x = np.random.default_rng(3).random((3, 64), dtype=np.float32)
    for version, seed in (("1", 0), ("2", 1)):
        target = f"{url(gateway)}/v2/models/digits/versions/{version}/infer"
        status, out = await call(http, "POST", target, infer_body(x, id="req-7", parameters={"p": 1}))
        assert status == 200, out
        assert out["id"] == "req-7" and out["model_name"] == "digits" and out["model_version"] == version
        logits = next(o for o in out["outputs"] if o["name"] == "logits")
        assert logits["datatype"] == "FP32" and logits["shape"] == [3, 10]
        (tmp_path / "m.onnx").write_bytes(mlp_onnx(seed))
        expected = ort.InferenceSession(str(tmp_path / "m.onnx")).run(["logits"], {"input": x})[0]
        np.testing.assert_allclose(np.array(logits["data"]).reshape(3, 10), expected, rtol=1e-5)


async def test_requested_outputs_only(gateway: Gateway, http: ClientSession) -> None:
    body = infer_body(np.ones((1, 64), np.float32), outputs=[{"name": "probabilities"}])
    status, out = await call(http, "POST", f"{url(gateway)}/v2/models/digits/infer", body)
    assert status == 200 and [o["name"] for o in out["outputs"]] == ["probabilities"]
    assert abs(sum(out["outputs"][0]["data"]) - 1.0) < 1e-5
    assert "id" not in out


async def test_every_datatype_round_trips(gateway: Gateway, http: ClientSession) -> None:
    assert set(SAMPLES) == set(V2_TO_ONNX)
    inputs = [{"name": f"x_{dt}", "datatype": dt, "shape": [2, 3], "data": data} for dt, data in SAMPLES.items()]
    status, out = await call(http, "POST", f"{url(gateway)}/v2/models/ident/infer", orjson.dumps({"inputs": inputs}))
    assert status == 200, out
    by_name = {o["name"]: o for o in out["outputs"]}
    for dt, data in SAMPLES.items():
        tensor = by_name[f"y_{dt}"]
        assert tensor["datatype"] == dt and tensor["shape"] == [2, 3]
        if dt in ("FP32",):
            np.testing.assert_allclose(tensor["data"], np.array(data, np.float32), rtol=1e-6)
        else:
            assert tensor["data"] == data, dt


async def test_nested_data_is_accepted(gateway: Gateway, http: ClientSession) -> None:
    body = orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 64], "data": [[0.0] * 64] * 2}]})
    status, out = await call(http, "POST", f"{url(gateway)}/v2/models/digits/infer", body)
    assert status == 200 and out["outputs"][0]["shape"] == [2, 10]


def _tensor(**overrides: object) -> bytes:
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64, **overrides}
    return orjson.dumps({"inputs": [tensor]})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"inputs": []}', "non-empty 'inputs'"),
        (_tensor(shape=[1, 63]), "needs 63 elements"),
        (_tensor(shape=[2, 32]), "shape [2, 32] but the model takes [-1, 64]"),
        (_tensor(datatype="FP64"), "datatype FP64 but the model takes FP32"),
        (_tensor(datatype="FP8"), "unknown datatype"),
        (_tensor(name="x"), "missing ['input']"),
        (_tensor(data=["a"] * 64), "not valid FP32"),
        (orjson.dumps({"inputs": [{"name": "input"}]}), "missing field"),
        (
            orjson.dumps(
                {
                    "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0] * 64}],
                    "outputs": [{"name": "nope"}],
                }
            ),
            "not outputs of the model",
        ),
    ],
)
async def test_bad_tensors_are_400_saying_what_was_wrong(
    gateway: Gateway, http: ClientSession, body: bytes, message: str
) -> None:
    status, out = await call(http, "POST", f"{url(gateway)}/v2/models/digits/infer", body)
    assert status == 400
    assert message in out["error"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/models/nope"),
        ("GET", "/v2/models/nope/ready"),
        ("POST", "/v2/models/nope/infer"),
        ("GET", "/v2/models/digits/versions/9"),
        ("POST", "/v2/models/digits/versions/9/infer"),
        ("GET", "/v2/nothing-here"),
    ],
)
async def test_unknown_model_or_version_is_404(gateway: Gateway, http: ClientSession, method: str, path: str) -> None:
    status, out = await call(http, method, url(gateway) + path, _tensor() if method == "POST" else None)
    assert status == 404 and out["error"]


async def test_too_large_body_is_413(gateway: Gateway, http: ClientSession) -> None:
    body = infer_body(np.zeros((400, 64), np.float32))
    assert len(body) > 64 * 1024
    status, out = await call(http, "POST", f"{url(gateway)}/v2/models/digits/infer", body)
    assert status == 413 and "larger than" in out["error"]

    async def chunked():  # no content-length: the limit is enforced while reading
        yield body

    async with http.post(f"{url(gateway)}/v2/models/digits/infer", data=chunked()) as response:
        assert response.status == 413 and "error" in orjson.loads(await response.read())


async def test_full_activation_queue_is_503(start_gateway, registry: ModelRegistry, http: ClientSession) -> None:  # type: ignore[no-untyped-def]
    registry.register("digits", mlp_onnx())
    gateway = await start_gateway(queue_limit=0)
    await call(http, "POST", f"{url(gateway)}/v1/models/digits/revisions", b"{}")
    status, out = await call(http, "POST", f"{url(gateway)}/v2/models/digits/infer", _tensor())
    assert status == 503 and "queue is full" in out["error"]


async def test_corrupted_model_is_503_with_the_reason_and_no_replica(
    start_gateway, registry: ModelRegistry, file_store, http: ClientSession
) -> None:  # type: ignore[no-untyped-def]
    registry.register("digits", mlp_onnx())
    path = Path(file_store.root) / "models/digits/1/model.onnx"
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    gateway = await start_gateway()
    await call(http, "POST", f"{url(gateway)}/v1/models/digits/revisions", b"{}")
    status, out = await call(http, "POST", f"{url(gateway)}/v2/models/digits/infer", _tensor())
    assert status == 503 and "integrity" in out["error"] and "sha256" in out["error"]
    assert not gateway.pools["digits-00001"].replicas
    status, _ = await call(http, "GET", f"{url(gateway)}/v2/health/live")
    assert status == 200


def test_cuda_provider_is_chosen_when_onnxruntime_offers_it() -> None:
    from serving.runtime import choose_providers

    assert choose_providers(["CUDAExecutionProvider", "CPUExecutionProvider"])[0] == "CUDAExecutionProvider"
    assert choose_providers(["AzureExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]


async def test_activation_timeout_is_503_and_counted(
    start_gateway, registry: ModelRegistry, http: ClientSession
) -> None:  # type: ignore[no-untyped-def]
    registry.register("digits", mlp_onnx())
    gateway = await start_gateway(activation_timeout_s=0.001)
    await call(http, "POST", f"{url(gateway)}/v1/models/digits/revisions", b"{}")
    status, out = await call(http, "POST", f"{url(gateway)}/v2/models/digits/infer", _tensor())
    assert status == 503 and "no replica became ready" in out["error"]
    async with http.get(f"{url(gateway)}/metrics") as response:
        text = await response.text()
    samples = parse(text)
    assert value(samples, "knflow_requests_total", revision="digits-00001", code="503") == 1
    assert value(samples, "knflow_errors_total", revision="digits-00001") == 1
    pool = gateway.pools["digits-00001"]
    await asyncio.wait_for(pool.ready.wait(), 10)  # the replica still comes up for later requests
    assert pool.replicas and pool.failure is None


async def test_inference_naming_another_namespace_is_not_served_from_defaults_models(gateway: Gateway) -> None:
    """A plain POST takes the gateway's lean path; one that names a namespace (query or header) or carries a token
    goes to aiohttp, where the guard's scope decides: team-a has no ``digits``, so 404, never default's answer."""
    body = infer_body(np.zeros((1, 64), np.float32))
    target = f"{url(gateway)}/v2/models/digits/infer"
    async with ClientSession() as http:
        async with http.post(target, data=body) as response:
            assert response.status == 200 and response.content_type == "application/json"
        assert gateway._lean is not None and gateway._lean.connections  # served on the lean path
        for extra in ({"params": {"namespace": "team-a"}}, {"headers": {"X-Knflow-Namespace": "team-a"}}):
            async with http.post(target, data=body, **extra) as response:
                assert response.status == 404, extra
                assert "not deployed" in (await response.json())["error"]
        assert not gateway._lean.connections  # the connection went over to aiohttp at the first of them
        async with http.post(f"{url(gateway)}/v2/models/nope/infer", data=body) as response:
            assert (response.status, response.content_type) == (404, "application/json")
