"""V2 clients for each wire the gateway speaks, written from the protocol (not from knflow's codecs), so the
conformance tests run the same cases against every wire: JSON, binary tensor data (REST), gRPC typed and raw."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import grpc
import numpy as np
import orjson
from aiohttp import ClientSession

from serving.protocol import V2_TO_NUMPY
from serving.v2grpc import grpc_predict_v2_pb2 as pb
from serving.v2grpc import grpc_predict_v2_pb2_grpc as pb_grpc

HEADER = "Inference-Header-Content-Length"
WIRES = ("json", "binary", "json-binary-out", "grpc", "grpc-raw")
#: typed-contents field per datatype (gRPC)
FIELDS = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}  # fmt: skip
GRPC_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
              413: grpc.StatusCode.RESOURCE_EXHAUSTED, 503: grpc.StatusCode.UNAVAILABLE}  # fmt: skip


@dataclass(frozen=True)
class Result:
    """One answer: HTTP-style status, error text, outputs as (datatype, array), and the answer's id/parameters."""

    status: int
    error: str = ""
    outputs: dict[str, tuple[str, np.ndarray]] | None = None
    id: str | None = None
    parameters: dict | None = None
    binary: bool = False  # whether the outputs came as binary data / raw contents


def raw_bytes(datatype: str, array: np.ndarray) -> bytes:
    """Little-endian, row-major bytes; BYTES as u32 length + bytes per element."""
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(b)) + b for b in (str(s).encode() for s in array.reshape(-1)))
    if datatype == "BOOL":
        return array.astype(np.uint8).tobytes()
    return array.astype(np.dtype(V2_TO_NUMPY[datatype]).newbyteorder("<")).tobytes()


def from_raw(datatype: str, shape: list[int], data: bytes) -> np.ndarray:
    if datatype == "BYTES":
        out, pos = [], 0
        while pos < len(data):
            (n,) = struct.unpack_from("<I", data, pos)
            out.append(data[pos + 4 : pos + 4 + n].decode())
            pos += 4 + n
        return np.array(out, dtype=object).reshape(shape)
    if datatype == "BOOL":
        return (np.frombuffer(data, np.uint8) != 0).reshape(shape)
    return np.frombuffer(data, np.dtype(V2_TO_NUMPY[datatype]).newbyteorder("<")).reshape(shape)


def _json_data(datatype: str, array: np.ndarray) -> list:
    return [str(x) for x in array.reshape(-1)] if datatype == "BYTES" else array.reshape(-1).tolist()


def _from_json(tensor: dict) -> tuple[str, np.ndarray]:
    dt = tensor["datatype"]
    return dt, np.array(tensor["data"], dtype=V2_TO_NUMPY[dt]).reshape(tensor["shape"])


async def rest(
    http: ClientSession, base: str, model: str, inputs: dict[str, tuple[str, np.ndarray]], wire: str,
    outputs: tuple[str, ...] = (), rid: str | None = None, tag: str | None = None,
) -> Result:  # fmt: skip
    """One inference over REST: ``json``, ``binary`` (binary inputs and outputs) or ``json-binary-out``."""
    tensors, chunks = [], []
    for name, (dt, array) in inputs.items():
        tensor: dict = {"name": name, "datatype": dt, "shape": list(array.shape)}
        if wire == "binary":
            chunks.append(raw_bytes(dt, array))
            tensor["parameters"] = {"binary_data_size": len(chunks[-1])}
        else:
            tensor["data"] = _json_data(dt, array)
        tensors.append(tensor)
    body: dict = {"inputs": tensors}
    if outputs:
        body["outputs"] = [{"name": n} for n in outputs]
    if rid is not None:
        body["id"] = rid
    if wire != "json":
        body["parameters"] = {"binary_data_output": True}
    head = orjson.dumps(body)
    headers = {HEADER: str(len(head))} if wire == "binary" else {}
    if tag:
        headers["x-knflow-tag"] = tag
    async with http.post(f"{base}/v2/models/{model}/infer", data=head + b"".join(chunks), headers=headers) as r:
        return parse_rest(r.status, r.headers.get(HEADER), await r.read())


def parse_rest(status: int, header: str | None, data: bytes) -> Result:
    """A REST answer, plain JSON or with binary outputs."""
    length = int(header) if header is not None else len(data)
    answer = orjson.loads(data[:length])
    if status != 200:
        return Result(status, answer["error"])
    outs, pos = {}, length
    for tensor in answer["outputs"]:
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is None:
            outs[tensor["name"]] = _from_json(tensor)
        else:
            dt = tensor["datatype"]
            outs[tensor["name"]] = dt, from_raw(dt, tensor["shape"], data[pos : pos + size])
            pos += size
    assert pos == len(data), "bytes left over after the binary outputs"
    return Result(200, "", outs, answer.get("id"), answer.get("parameters"), header is not None)


def grpc_request(
    model: str, inputs: dict[str, tuple[str, np.ndarray]], raw: bool, outputs: tuple[str, ...] = (),
    rid: str | None = None, version: str = "",
) -> pb.ModelInferRequest:  # fmt: skip
    request = pb.ModelInferRequest(model_name=model, model_version=version, id=rid or "")
    for name, (dt, array) in inputs.items():
        tensor = request.inputs.add(name=name, datatype=dt, shape=array.shape)
        if raw:
            request.raw_input_contents.append(raw_bytes(dt, array))
        elif dt == "BYTES":
            tensor.contents.bytes_contents.extend(str(s).encode() for s in array.reshape(-1))
        else:
            getattr(tensor.contents, FIELDS[dt]).extend(array.reshape(-1).tolist())
    for name in outputs:
        request.outputs.add(name=name)
    return request


async def grpc_infer(target: str, request: pb.ModelInferRequest, tag: str | None = None) -> Result:
    """One ModelInfer call; errors as HTTP-style statuses (by the gRPC code) for the same assertions as REST."""
    async with grpc.aio.insecure_channel(target, options=[("grpc.max_receive_message_length", -1)]) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        try:
            response = await stub.ModelInfer(request, metadata=(("x-knflow-tag", tag),) if tag else None)
        except grpc.aio.AioRpcError as exc:
            status = next((s for s, c in GRPC_CODES.items() if c == exc.code()), 500)
            return Result(status, f"{exc.code().name}: {exc.details()}")
    return parse_grpc(response)


def parse_grpc(response: pb.ModelInferResponse) -> Result:
    outs = {}
    raw = list(response.raw_output_contents)
    for i, tensor in enumerate(response.outputs):
        dt, shape = tensor.datatype, list(tensor.shape)
        if raw:
            outs[tensor.name] = dt, from_raw(dt, shape, raw[i])
        elif dt == "BYTES":
            outs[tensor.name] = (
                dt,
                np.array([b.decode() for b in tensor.contents.bytes_contents], object).reshape(shape),
            )
        else:
            outs[tensor.name] = dt, np.array(getattr(tensor.contents, FIELDS[dt]), V2_TO_NUMPY[dt]).reshape(shape)
    params = {k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in response.parameters.items()}
    return Result(200, "", outs, response.id or None, params or None, bool(raw))


async def infer(
    wire: str, http: ClientSession, gateway, model: str, inputs: dict[str, tuple[str, np.ndarray]],  # type: ignore[no-untyped-def]
    outputs: tuple[str, ...] = (), rid: str | None = None, tag: str | None = None,
) -> Result:  # fmt: skip
    """One inference on ``wire`` against an in-process gateway."""
    if wire.startswith("grpc"):
        request = grpc_request(model, inputs, wire == "grpc-raw", outputs, rid)
        return await grpc_infer(f"127.0.0.1:{gateway.grpc_port}", request, tag)
    return await rest(http, f"http://127.0.0.1:{gateway.port}", model, inputs, wire, outputs, rid, tag)
