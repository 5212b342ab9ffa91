"""The V2 gRPC data plane in a replica: a serialized ``ModelInferRequest`` into one ``InferRequest``, the answer back.

Inputs come as typed ``InferTensorContents`` or as ``raw_input_contents`` (what tritonclient sends). The answer
carries ``raw_output_contents`` when the request sent raw inputs or asked for binary outputs
(``binary_data_output`` / an output's ``binary_data``), or when an output is FP16 (no typed field); else
typed contents.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from infra.errors import InvalidRequest
from serving import binary, protocol
from serving.protocol import V2_TO_NUMPY, InferRequest
from serving.v2grpc import grpc_predict_v2_pb2 as pb

#: the parameters asking for binary (raw) outputs
WISHES = ("binary_data", "binary_data_output")
#: The typed-contents field of each datatype and the numpy type it holds (FP16 has none).
CONTENTS: dict[str, tuple[str, Any]] = {
    "BOOL": ("bool_contents", np.bool_),
    "INT8": ("int_contents", np.int32),
    "INT16": ("int_contents", np.int32),
    "INT32": ("int_contents", np.int32),
    "INT64": ("int64_contents", np.int64),
    "UINT8": ("uint_contents", np.uint32),
    "UINT16": ("uint_contents", np.uint32),
    "UINT32": ("uint_contents", np.uint32),
    "UINT64": ("uint64_contents", np.uint64),
    "FP32": ("fp32_contents", np.float32),
    "FP64": ("fp64_contents", np.float64),
    "BYTES": ("bytes_contents", np.object_),
}


def parameters(params: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    """An ``InferParameter`` map as plain values (a parameter with no value set is None)."""
    out = {}
    for key, value in params.items():
        choice = value.WhichOneof("parameter_choice")
        out[key] = getattr(value, choice) if choice else None
    return out


def set_parameter(target: pb.InferParameter, value: Any) -> None:
    """Store one plain value in an ``InferParameter``."""
    if isinstance(value, bool):
        target.bool_param = value
    elif isinstance(value, int) and -(2**63) <= value < 2**63:
        target.int64_param = value
    elif isinstance(value, int) and 0 <= value < 2**64:
        target.uint64_param = value
    elif isinstance(value, float):
        target.double_param = value
    else:
        target.string_param = str(value)


def _typed(name: str, datatype: str, shape: list[int], contents: pb.InferTensorContents) -> np.ndarray:
    if datatype not in CONTENTS:
        raise InvalidRequest(f"input {name!r}: {datatype} has no typed contents; send it in raw_input_contents")
    field, wide = CONTENTS[datatype]
    values = getattr(contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise InvalidRequest(f"input {name!r}: shape {shape} needs {count} elements, {field} has {len(values)}")
    if datatype == "BYTES":
        try:
            return np.array([str(v, "utf-8") for v in values], dtype=np.object_).reshape(shape)
        except UnicodeDecodeError:
            raise InvalidRequest(
                f"input {name!r}: an element of bytes_contents is not UTF-8 (ONNX strings are)"
            ) from None
    array = np.fromiter(values, wide, count)
    narrow = array.astype(V2_TO_NUMPY[datatype])
    if narrow.dtype != array.dtype and not np.array_equal(narrow, array):
        raise InvalidRequest(f"input {name!r}: {field} holds values outside the range of {datatype}")
    return narrow.reshape(shape)


def decode(body: bytes) -> InferRequest:
    """One inference request from a serialized ``ModelInferRequest``; ``InvalidRequest`` names what was wrong."""
    request = pb.ModelInferRequest()
    try:
        request.ParseFromString(body)
    except DecodeError as exc:
        raise InvalidRequest(f"request is not a valid ModelInferRequest: {exc}") from None
    if not request.inputs:
        raise InvalidRequest("request must have at least one input")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidRequest(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs")
    inputs, datatypes = {}, {}
    for index, tensor in enumerate(request.inputs):
        head = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        name, datatype, shape = protocol.tensor_head(head, f"inputs[{index}]")
        if name in inputs:
            raise InvalidRequest(f"input {name!r} is given twice")
        if raw:
            if tensor.HasField("contents"):
                raise InvalidRequest(f"input {name!r} has both contents and raw_input_contents")
            inputs[name] = binary.from_bytes(name, datatype, shape, raw[index])
        else:
            inputs[name] = _typed(name, datatype, shape, tensor.contents)
        datatypes[name] = datatype
    wishes = {}
    for index, output in enumerate(request.outputs):
        wish = protocol.binary_wish(parameters(output.parameters), f"outputs[{index}]", *WISHES)
        if wish is not None:
            wishes[output.name] = wish
    params = parameters(request.parameters)
    default = bool(raw) or bool(protocol.binary_wish(params, "request", *WISHES))
    outputs = tuple(o.name for o in request.outputs)
    return InferRequest(request.id or None, inputs, datatypes, outputs, params, default, wishes)


def encode(
    model: str, version: str, request: InferRequest, outputs: Mapping[str, np.ndarray], params: dict | None
) -> bytes:
    """The serialized ``ModelInferResponse``."""
    response = pb.ModelInferResponse(model_name=model, model_version=version, id=request.id or "")
    for key, value in (params or {}).items():
        set_parameter(response.parameters[key], value)
    datatypes = {name: protocol.output_datatype(name, array) for name, array in outputs.items()}
    raw = any(d not in CONTENTS for d in datatypes.values()) or (
        request.wants_binary and any(request.binary(n) for n in outputs)
    )
    for name, array in outputs.items():
        datatype = datatypes[name]
        tensor = response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        if raw:
            response.raw_output_contents.append(binary.to_bytes(datatype, array))
        elif datatype == "BYTES":
            values = array.reshape(-1).tolist()
            tensor.contents.bytes_contents.extend(v if isinstance(v, bytes) else str(v).encode() for v in values)
        else:
            getattr(tensor.contents, CONTENTS[datatype][0]).extend(array.reshape(-1).tolist())
    return response.SerializeToString()
