"""The V2 gRPC service: health and metadata answer like REST, every malformed ModelInferRequest is
INVALID_ARGUMENT naming the field, and failures map to the gRPC codes of their HTTP statuses."""

from __future__ import annotations

import grpc
import numpy as np
import orjson
import pytest
from aiohttp import ClientSession

from serving.gateway import Gateway
from serving.registry import ModelRegistry
from serving.v2grpc import grpc_predict_v2_pb2 as pb
from serving.v2grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.serving.helpers import failing_onnx, identity_onnx, mlp_onnx
from tests.serving.wires import grpc_request, raw_bytes


@pytest.fixture
async def gateway(start_gateway, registry: ModelRegistry) -> Gateway:  # type: ignore[no-untyped-def]
    registry.register("digits", mlp_onnx(0))
    registry.register("digits", mlp_onnx(1))
    registry.register("small", identity_onnx(("INT8", "FP16", "BYTES")))
    registry.register("broken", failing_onnx())
    gateway = await start_gateway()
    async with ClientSession() as http:
        for name, version in (("digits", 1), ("digits", 2), ("small", 1), ("broken", 1)):
            url = f"http://127.0.0.1:{gateway.port}/v1/models/{name}/revisions"
            async with http.post(url, json={"version": version}) as r:
                assert r.status == 201
    return gateway


@pytest.fixture
async def stub(gateway: Gateway):  # type: ignore[no-untyped-def]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


async def rest_json(gateway: Gateway, path: str) -> dict:
    async with ClientSession() as http, http.get(f"http://127.0.0.1:{gateway.port}{path}") as r:
        return orjson.loads(await r.read())


async def test_health_and_metadata_answer_as_rest_does(gateway: Gateway, stub) -> None:  # type: ignore[no-untyped-def]
    assert (await stub.ServerLive(pb.ServerLiveRequest())).live
    assert (await stub.ServerReady(pb.ServerReadyRequest())).ready
    server = await stub.ServerMetadata(pb.ServerMetadataRequest())
    rest = await rest_json(gateway, "/v2")
    assert (server.name, server.version, list(server.extensions)) == (rest["name"], rest["version"], rest["extensions"])
    assert "binary_tensor_data" in server.extensions
    for version in ("", "2"):
        meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name="digits", version=version))
        rest = await rest_json(gateway, "/v2/models/digits" + (f"/versions/{version}" if version else ""))
        assert (meta.name, list(meta.versions), meta.platform) == (rest["name"], rest["versions"], rest["platform"])
        for kind in ("inputs", "outputs"):
            got = [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in getattr(meta, kind)]
            assert got == rest[kind]
        assert (await stub.ModelReady(pb.ModelReadyRequest(name="digits", version=version))).ready


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("ModelReady", "model 'nope' is not deployed"),
        ("ModelMetadata", "model 'nope' is not deployed"),
    ],
)
async def test_unknown_model_is_not_found(stub, call: str, message: str) -> None:  # type: ignore[no-untyped-def]
    request = getattr(pb, f"{call}Request")(name="nope")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await getattr(stub, call)(request)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and message in info.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ModelReady(pb.ModelReadyRequest(name="digits", version="9"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "no deployed version 9" in info.value.details()


def _small(**change: object) -> pb.ModelInferRequest:
    """A valid request for the ``small`` model (INT8, FP16, BYTES) with raw contents."""
    inputs = {
        "x_INT8": ("INT8", np.array([[1, -2, 3]], np.int8)),
        "x_FP16": ("FP16", np.array([[0.5, 1.5, -2]], np.float16)),
        "x_BYTES": ("BYTES", np.array([["a", "b", "c"]], object)),
    }
    request = grpc_request("small", inputs, raw=True)
    for key, value in change.items():
        target, field = key.split("__") if "__" in key else ("", key)
        message = request.inputs[int(target[-1])] if target else request
        message.ClearField(field)
        if isinstance(value, list):
            getattr(message, field).extend(value)
        elif value is not None:
            getattr(message, field).CopyFrom(value) if hasattr(value, "CopyFrom") else setattr(message, field, value)
    return request


def _typed(field: str, values: list, datatype: str = "INT8") -> pb.ModelInferRequest:
    """A typed-contents request for the ``small`` model: valid INT8 and BYTES unless ``datatype`` says otherwise."""
    request = pb.ModelInferRequest(model_name="small")
    valid = {"INT8": ("int_contents", [1, 2, 3]), "BYTES": ("bytes_contents", [b"a"] * 3), "FP16": ("", [])}
    for dt, (name, default) in valid.items():
        tensor = request.inputs.add(name=f"x_{dt}", datatype=dt, shape=[1, 3])
        field_name, data = (field, values) if dt == datatype else (name, default)
        if data:
            getattr(tensor.contents, field_name).extend(data)
    return request


MALFORMED = {
    "no inputs": (pb.ModelInferRequest(model_name="small"), "at least one input"),
    "raw count differs": (_small(raw_input_contents=[b"\0\0\0"]), "raw_input_contents has 1 entries for 3 inputs"),
    "raw size differs from shape": (
        _small(raw_input_contents=[b"\0\0", raw_bytes("FP16", np.zeros(3)), raw_bytes("BYTES", np.array(["a"] * 3))]),
        "needs 3 bytes, its binary data has 2",
    ),
    "BYTES raw prefix past the end": (
        _small(raw_input_contents=[b"\0\0\0", raw_bytes("FP16", np.zeros(3)), b"\x09\0\0\0abc" + b"\0" * 5]),
        "says 9 bytes",
    ),
    "unknown datatype": (_small(inputs0__datatype="FP8"), "unknown datatype 'FP8'"),
    "negative shape": (_small(inputs0__shape=[-1, 3]), "'shape' must be a list of non-negative integers"),
    "typed and raw both": (_small(inputs0__contents=pb.InferTensorContents(int_contents=[1, 2, 3])), "both contents"),
    "typed count differs": (_typed("int_contents", [1, 2]), "needs 3 elements, int_contents has 2"),
    "INT8 out of range": (_typed("int_contents", [1, 2, 300]), "outside the range of INT8"),
    "FP16 typed": (_typed("int_contents", [1, 2, 3]), "FP16 has no typed contents"),
    "BYTES typed not UTF-8": (_typed("bytes_contents", [b"\xff"] * 3, "BYTES"), "not UTF-8"),
    "binary_data not a bool": (
        _small(
            outputs=[
                pb.ModelInferRequest.InferRequestedOutputTensor(
                    name="y_INT8", parameters={"binary_data": pb.InferParameter(string_param="yes")}
                )
            ]
        ),
        "parameter 'binary_data' must be true or false",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_each_malformed_request_is_invalid_argument_naming_the_field(stub, case: str) -> None:  # type: ignore[no-untyped-def]
    request, message = MALFORMED[case]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in info.value.details()


async def test_the_valid_small_request_is_answered_with_raw_outputs(stub) -> None:  # type: ignore[no-untyped-def]
    response = await stub.ModelInfer(_small())
    assert [o.name for o in response.outputs] == ["y_INT8", "y_FP16", "y_BYTES"]
    assert response.raw_output_contents[0] == b"\x01\xfe\x03"


async def test_bytes_that_are_no_message_are_invalid_argument(gateway: Gateway) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(b"\x0a\xff\xff\xff\xff\x0f")  # field 1, a length past the end
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid ModelInferRequest" in info.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as info:  # routes fine, the tensors are garbage
            await call(pb.ModelReadyRequest(name="digits").SerializeToString() + b"\x2a\x03\xff\xff\xff")
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_model_failing_at_run_time_is_internal_with_the_reason(stub) -> None:  # type: ignore[no-untyped-def]
    request = grpc_request("broken", {"input": ("FP32", np.ones((1, 64), np.float32))}, raw=False)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.INTERNAL and "inference failed" in info.value.details()


async def test_inference_parameters_travel_both_ways(stub) -> None:  # type: ignore[no-untyped-def]
    request = grpc_request("digits", {"input": ("FP32", np.ones((1, 64), np.float32))}, raw=False, rid="r1")
    request.parameters["binary_data_output"].bool_param = True
    response = await stub.ModelInfer(request)
    assert response.id == "r1" and response.model_name == "digits" and response.model_version == "1"
    assert len(response.raw_output_contents) == 2 and not response.outputs[0].HasField("contents")


async def test_a_taken_grpc_port_stops_the_start_naming_the_setting(start_gateway, gateway: Gateway) -> None:  # type: ignore[no-untyped-def]
    from infra.errors import Unavailable
    from serving.gateway import Gateway as GatewayClass

    second = GatewayClass(gateway.settings, gateway.store)
    with pytest.raises(Unavailable, match="KNFLOW_GRPC_PORT"):
        await second.start(port=0, grpc_port=gateway.grpc_port)
    await second.stop()
