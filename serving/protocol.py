"""KServe Open Inference Protocol (V2) JSON tensors: parse a request into numpy arrays, encode a response.

The body is parsed once with orjson; each tensor's ``data`` (flat or nested) becomes one numpy
array of the declared datatype and shape, checked against the model's signature.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
    binary_default: bool = False  # binary_data_output: outputs are answered as binary data unless one says not
    binary_outputs: Mapping[str, bool] = field(default_factory=dict)  # a requested output's own binary_data wish

    @property
    def wants_binary(self) -> bool:
        """Whether any output may be asked for as binary data (the cheap test before ``binary``)."""
        return self.binary_default or bool(self.binary_outputs)

    def binary(self, name: str) -> bool:
        """Whether output ``name`` is to be answered as binary data."""
        return self.binary_outputs.get(name, self.binary_default)


#: the largest element count a tensor may declare (numpy's own limit on one array is far above what fits in memory)
MAX_ELEMENTS = 2**40


def _field(raw: Mapping[str, Any], name: str, where: str) -> Any:
    try:
        return raw[name]
    except KeyError:
        raise InvalidRequest(f"{where} is missing field {name!r}") from None


def tensor_head(raw: Any, where: str) -> tuple[str, str, list[int]]:
    """A V2 tensor's name, datatype and shape, each checked for type and range; ``where`` names it in errors."""
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{where} must be a JSON object, got {type(raw).__name__}")
    name, datatype, shape = (_field(raw, f, where) for f in ("name", "datatype", "shape"))
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"{where}: 'name' must be a non-empty string, got {name!r}"[:300])
    where = f"input {name!r}"
    if not isinstance(datatype, str) or datatype not in V2_TO_NUMPY:
        raise InvalidRequest(f"{where}: unknown datatype {datatype!r} (one of {', '.join(V2_TO_NUMPY)})"[:300])
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise InvalidRequest(f"{where}: 'shape' must be a list of non-negative integers, got {shape!r}"[:300])
    if len(shape) > 32 or math.prod(shape) > MAX_ELEMENTS or any(d > MAX_ELEMENTS for d in shape):
        raise InvalidRequest(f"{where}: shape {shape} is larger than a tensor may be"[:300])
    return name, datatype, shape


def json_tensor(raw: Any, index: int) -> tuple[str, str, np.ndarray]:
    """Input ``index`` of a request with its data in JSON: name, datatype and the array."""
    name, datatype, shape = tensor_head(raw, f"inputs[{index}]")
    data = _field(raw, "data", f"input {name!r}")
    try:
        if datatype == "BYTES":
            array = np.array(_flatten(data), dtype=np.object_)
            if not all(isinstance(x, str) for x in array):
                raise TypeError("BYTES data must be strings")
        else:
            array = np.asarray(data, dtype=V2_TO_NUMPY[datatype])
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidRequest(f"input {name!r}: data is not valid {datatype}: {exc}"[:300]) from None
    expected = math.prod(shape)
    if array.size != expected:
        raise InvalidRequest(f"input {name!r}: shape {shape} needs {expected} elements, data has {array.size}")
    return name, datatype, array.reshape(shape)


def _flatten(data: Any) -> list:
    """Nested lists of any depth to one flat list, without recursion (a client chooses the depth)."""
    if not isinstance(data, list):
        return [data]
    out: list = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


@dataclass(frozen=True)
class RequestFields:
    """The checked top-level fields of a V2 request object (its inputs not yet read)."""

    inputs: list
    id: str | None
    outputs: tuple[str, ...]
    parameters: dict
    binary_default: bool
    binary_outputs: dict[str, bool]

    def request(self, inputs: dict[str, np.ndarray], datatypes: dict[str, str]) -> InferRequest:
        """The request with its inputs read."""
        return InferRequest(
            self.id, inputs, datatypes, self.outputs, self.parameters, self.binary_default, self.binary_outputs
        )


def binary_wish(parameters: Any, where: str, *names: str) -> bool | None:
    """A ``binary_data``-style parameter's value (None when absent); it must be a boolean."""
    if not isinstance(parameters, dict):
        if parameters is None:
            return None
        raise InvalidRequest(f"{where}: 'parameters' must be an object, got {type(parameters).__name__}")
    for name in names:
        value = parameters.get(name)
        if value is not None:
            if not isinstance(value, bool):
                raise InvalidRequest(f"{where}: parameter {name!r} must be true or false, got {value!r}"[:300])
            return value
    return None


def request_fields(raw: Any) -> RequestFields:
    """The checked top-level fields of a V2 request object: inputs, id, requested outputs, parameters."""
    if not isinstance(raw, dict) or not isinstance(raw.get("inputs"), list) or not raw["inputs"]:
        raise InvalidRequest("request must be a JSON object with a non-empty 'inputs' list")
    rid = raw.get("id")
    if rid is not None and not isinstance(rid, str):
        raise InvalidRequest(f"'id' must be a string, got {type(rid).__name__}")
    requested = raw.get("outputs")
    if requested is None:
        requested = []
    if not isinstance(requested, list):
        raise InvalidRequest(f"'outputs' must be a list of {{\"name\": ...}} objects, got {type(requested).__name__}")
    names, binary = [], {}
    for i, item in enumerate(requested):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            raise InvalidRequest(f"outputs[{i}] must be an object with a string 'name'")
        names.append(name)
        if "parameters" in item:
            wish = binary_wish(item["parameters"], f"outputs[{i}]", "binary_data", "binary_data_output")
            if wish is not None:
                binary[name] = wish
    parameters = raw.get("parameters")
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        raise InvalidRequest(f"'parameters' must be an object, got {type(parameters).__name__}")
    default = bool(parameters) and bool(binary_wish(parameters, "request", "binary_data_output"))
    return RequestFields(raw["inputs"], rid, tuple(names), parameters, default, binary)


def parse_request(body: bytes) -> InferRequest:
    """Parse a V2 JSON inference request body; ``InvalidRequest`` names the field that was wrong."""
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    fields = request_fields(raw)
    inputs, datatypes = {}, {}
    for index, item in enumerate(fields.inputs):
        name, datatype, array = json_tensor(item, index)
        if name in inputs:
            raise InvalidRequest(f"input {name!r} is given twice")
        inputs[name], datatypes[name] = array, datatype
    return fields.request(inputs, datatypes)


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


def output_datatype(name: str, array: np.ndarray) -> str:
    """The V2 datatype of an output array."""
    datatype = ONNX_TO_V2.get(array.dtype.str, "BYTES" if array.dtype.kind in "OUS" else None)
    if datatype is None:
        raise InvalidRequest(f"output {name!r} has dtype {array.dtype} that V2 cannot carry")
    return datatype


def output_tensor(name: str, array: np.ndarray) -> dict:
    """One V2 output tensor; numpy-native dtypes go to orjson without a Python list."""
    datatype = output_datatype(name, array)
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
