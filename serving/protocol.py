"""KServe Open Inference Protocol (V2) JSON tensors: parse a request into numpy arrays, encode a response.

The body is parsed once with orjson; each tensor's ``data`` (flat or nested) becomes one numpy
array of the declared datatype and shape, checked against the model's signature.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from infra.errors import InvalidRequest

V2_TO_NUMPY: dict[str, Any] = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}
#: numpy dtype ``.str`` (e.g. ``<f4``) to V2 datatype.
ONNX_TO_V2: dict[str, str] = {np.dtype(t).str: name for name, t in V2_TO_NUMPY.items() if name != "BYTES"}
ONNX_TO_V2["|O"] = "BYTES"
ONNX_TO_V2["<U0"] = "BYTES"
ONNX_TO_V2["|b1"] = "BOOL"
_NUMPY_SAFE = {"FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "BOOL"}


@dataclass(frozen=True)
class InferRequest:
    """A parsed V2 inference request."""

    id: str | None
    inputs: dict[str, np.ndarray]
    datatypes: dict[str, str]
    outputs: tuple[str, ...]  # requested output names; empty = all
    parameters: dict


def _tensor(raw: Mapping[str, Any]) -> tuple[str, str, np.ndarray]:
    try:
        name, datatype, shape, data = raw["name"], raw["datatype"], raw["shape"], raw["data"]
    except (KeyError, TypeError) as exc:
        raise InvalidRequest(f"input tensor is missing field {exc}") from None
    if datatype not in V2_TO_NUMPY:
        raise InvalidRequest(f"input {name!r}: unknown datatype {datatype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InvalidRequest(f"input {name!r}: shape must be a list of non-negative integers, got {shape!r}")
    try:
        if datatype == "BYTES":
            array = np.array(_flatten(data), dtype=np.object_)
        else:
            array = np.asarray(data, dtype=V2_TO_NUMPY[datatype])
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"input {name!r}: data is not valid {datatype}: {exc}") from None
    expected = math.prod(shape)
    if array.size != expected:
        raise InvalidRequest(f"input {name!r}: shape {shape} needs {expected} elements, data has {array.size}")
    return name, datatype, array.reshape(shape)


def _flatten(data: Any) -> list:
    if not isinstance(data, list):
        return [data]
    if data and isinstance(data[0], list):
        return [x for item in data for x in _flatten(item)]
    return data


def parse_request(body: bytes) -> InferRequest:
    """Parse a V2 JSON inference request body; ``InvalidRequest`` says what was wrong."""
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("inputs"), list) or not raw["inputs"]:
        raise InvalidRequest("request must be a JSON object with a non-empty 'inputs' list")
    inputs, datatypes = {}, {}
    for item in raw["inputs"]:
        name, datatype, array = _tensor(item)
        inputs[name], datatypes[name] = array, datatype
    outputs = tuple(o["name"] for o in raw.get("outputs") or () if isinstance(o, dict) and "name" in o)
    rid = raw.get("id")
    return InferRequest(
        id=str(rid) if rid is not None else None,
        inputs=inputs,
        datatypes=datatypes,
        outputs=outputs,
        parameters=raw.get("parameters") or {},
    )


def check_signature(request: InferRequest, specs: Sequence[Any]) -> None:
    """Inputs must match the model's signature by name, datatype and shape (``-1`` matches any size)."""
    expected = {s.name: s for s in specs}
    missing = sorted(set(expected) - set(request.inputs))
    unknown = sorted(set(request.inputs) - set(expected))
    if missing or unknown:
        raise InvalidRequest(f"inputs do not match the model: missing {missing}, unexpected {unknown}")
    for name, array in request.inputs.items():
        spec = expected[name]
        if request.datatypes[name] != spec.datatype:
            raise InvalidRequest(
                f"input {name!r}: datatype {request.datatypes[name]} but the model takes {spec.datatype}"
            )
        if len(array.shape) != len(spec.shape) or any(
            d != s and s != -1 for d, s in zip(array.shape, spec.shape, strict=True)
        ):
            raise InvalidRequest(f"input {name!r}: shape {list(array.shape)} but the model takes {list(spec.shape)}")


def output_tensor(name: str, array: np.ndarray) -> dict:
    """One V2 output tensor; numpy-native dtypes go to orjson without a Python list."""
    datatype = ONNX_TO_V2.get(array.dtype.str, "BYTES" if array.dtype.kind in "OUS" else None)
    if datatype is None:
        raise InvalidRequest(f"output {name!r} has dtype {array.dtype} that V2 cannot carry")
    flat = array.reshape(-1)
    if datatype == "BYTES":
        data: Any = [x.decode() if isinstance(x, bytes) else str(x) for x in flat.tolist()]
    elif datatype in _NUMPY_SAFE and flat.dtype.isnative:
        data = np.ascontiguousarray(flat)
    else:
        data = flat.tolist()
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": data}


def encode_response(
    model: str, version: str, rid: str | None, outputs: Mapping[str, np.ndarray], parameters: dict | None = None
) -> bytes:
    """The V2 inference response body."""
    body: dict[str, Any] = {"model_name": model, "model_version": version}
    if rid is not None:
        body["id"] = rid
    if parameters:
        body["parameters"] = parameters
    body["outputs"] = [output_tensor(n, a) for n, a in outputs.items()]
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def error_body(message: str) -> bytes:
    """The V2 error body."""
    return orjson.dumps({"error": message})
