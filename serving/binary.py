"""The V2 binary tensor data extension (REST): a JSON header followed by raw tensor bytes, both ways.

A request carries ``Inference-Header-Content-Length``: that many bytes of JSON header, then the binary part,
from which every input with ``parameters.binary_data_size`` takes its bytes in order (little-endian,
row-major; a BYTES element is a 4-byte little-endian length and its bytes). Outputs asked for with
``binary_data_output`` (or an output's ``binary_data``) are answered the same way. The tensor byte layout
here is also the one of gRPC's raw contents.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from infra.errors import InvalidRequest
from serving import protocol
from serving.protocol import V2_TO_NUMPY, InferRequest

HEADER_LENGTH = "Inference-Header-Content-Length"
#: Frame body prefix: the request's header length (the gateway adds it, the codec reads it).
PREFIX = struct.Struct("<I")
#: A replica's REST answer that starts with this byte is binary: MARK, u32 header length, header, binary part.
#: (A JSON answer starts with ``{``.)
MARK = b"\x00"
_LENGTH = struct.Struct("<I")


def request_body(header_length: int, body: bytes) -> bytes:
    """The frame body of a binary request: the header length, then the body as the client sent it."""
    return PREFIX.pack(header_length) + body


def answer(body: bytes) -> tuple[int | None, bytes | memoryview]:
    """A replica's REST answer as (header length or None for plain JSON, the body to send)."""
    if not body.startswith(MARK):
        return None, body
    (length,) = _LENGTH.unpack_from(body, 1)
    return length, memoryview(body)[1 + _LENGTH.size :]


# -- tensors <-> bytes -----------------------------------------------------------------------------------
def from_bytes(name: str, datatype: str, shape: list[int], data: memoryview | bytes) -> np.ndarray:
    """One tensor from its raw little-endian bytes; ``InvalidRequest`` when the sizes do not add up."""
    count = math.prod(shape)
    if datatype == "BYTES":
        return _strings(name, count, memoryview(data)).reshape(shape)
    dtype = np.dtype(V2_TO_NUMPY[datatype]).newbyteorder("<")
    if len(data) != count * dtype.itemsize:
        raise InvalidRequest(
            f"input {name!r}: shape {shape} of {datatype} needs {count * dtype.itemsize} bytes, "
            f"its binary data has {len(data)}"
        )
    if datatype == "BOOL":
        return (np.frombuffer(data, np.uint8) != 0).reshape(shape)
    return np.frombuffer(data, dtype).reshape(shape)


def _strings(name: str, count: int, data: memoryview) -> np.ndarray:
    if count * _LENGTH.size > len(data):
        raise InvalidRequest(f"input {name!r}: {count} BYTES elements need at least {count * 4} bytes, has {len(data)}")
    out = np.empty(count, dtype=np.object_)
    pos = 0
    for i in range(count):
        if pos + _LENGTH.size > len(data):
            raise InvalidRequest(f"input {name!r}: BYTES element {i}'s length prefix runs past the end of its data")
        (size,) = _LENGTH.unpack_from(data, pos)
        pos += _LENGTH.size
        if size > len(data) - pos:
            raise InvalidRequest(
                f"input {name!r}: BYTES element {i} says {size} bytes, only {len(data) - pos} remain in its data"
            )
        try:
            out[i] = str(data[pos : pos + size], "utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest(f"input {name!r}: BYTES element {i} is not UTF-8 (ONNX strings are)") from None
        pos += size
    if pos != len(data):
        raise InvalidRequest(f"input {name!r}: {len(data) - pos} bytes follow its {count} BYTES elements")
    return out


def to_bytes(datatype: str, array: np.ndarray) -> bytes:
    """An output's raw little-endian, row-major bytes."""
    if datatype == "BYTES":
        parts: list[bytes] = []
        for item in array.reshape(-1).tolist():
            raw = item if isinstance(item, bytes) else str(item).encode()
            parts += (_LENGTH.pack(len(raw)), raw)
        return b"".join(parts)
    if datatype == "BOOL":
        return np.ascontiguousarray(array, np.uint8).tobytes()
    return np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes()


# -- requests ------------------------------------------------------------------------------------------
def _binary_size(item: Any, where: str) -> int | None:
    parameters = item.get("parameters") if isinstance(item, dict) else None
    if not isinstance(parameters, dict) or "binary_data_size" not in parameters:
        return None
    size = parameters["binary_data_size"]
    if type(size) is not int or size < 0:
        raise InvalidRequest(f"{where}: 'binary_data_size' must be a non-negative integer, got {size!r}"[:300])
    return size


def decode(body: bytes) -> InferRequest:
    """A binary request's frame body (``request_body``) into one ``InferRequest``."""
    if len(body) < PREFIX.size:
        raise InvalidRequest(f"{HEADER_LENGTH} is missing")
    (length,) = PREFIX.unpack_from(body)
    view = memoryview(body)[PREFIX.size :]
    if length > len(view):
        raise InvalidRequest(f"{HEADER_LENGTH} {length} is beyond the body's {len(view)} bytes")
    try:
        raw = orjson.loads(view[:length])
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the JSON header ({HEADER_LENGTH} {length} bytes) is not valid JSON: {exc}") from None
    fields = protocol.request_fields(raw)
    binary, offset = view[length:], 0
    inputs, datatypes = {}, {}
    for index, item in enumerate(fields.inputs):
        size = _binary_size(item, f"inputs[{index}]")
        if size is None:
            name, datatype, array = protocol.json_tensor(item, index)
        else:
            name, datatype, shape = protocol.tensor_head(item, f"inputs[{index}]")
            if "data" in item:
                raise InvalidRequest(f"input {name!r} has both 'data' and 'binary_data_size'")
            if size > len(binary) - offset:
                raise InvalidRequest(
                    f"input {name!r}: binary_data_size {size} runs past the end of the binary part "
                    f"({len(binary) - offset} bytes left)"
                )
            array = from_bytes(name, datatype, shape, binary[offset : offset + size])
            offset += size
        if name in inputs:
            raise InvalidRequest(f"input {name!r} is given twice")
        inputs[name], datatypes[name] = array, datatype
    if offset != len(binary):
        raise InvalidRequest(f"the binary part has {len(binary) - offset} bytes that no input's binary_data_size takes")
    return fields.request(inputs, datatypes)


# -- answers -------------------------------------------------------------------------------------------
def encode(
    model: str, version: str, request: InferRequest, outputs: Mapping[str, np.ndarray], parameters: dict | None
) -> bytes:
    """The answer: binary (``MARK`` …) when some output is asked for as binary data, else plain JSON."""
    if not request.wants_binary or not any(request.binary(n) for n in outputs):
        return protocol.encode_response(model, version, request.id, outputs, parameters)
    head: dict[str, Any] = {"model_name": model, "model_version": version}
    if request.id is not None:
        head["id"] = request.id
    if parameters:
        head["parameters"] = parameters
    tensors, chunks = [], []
    for name, array in outputs.items():
        if not request.binary(name):
            tensors.append(protocol.output_tensor(name, array))
            continue
        datatype = protocol.output_datatype(name, array)
        chunks.append(to_bytes(datatype, array))
        size = {"binary_data_size": len(chunks[-1])}
        tensors.append({"name": name, "datatype": datatype, "shape": list(array.shape), "parameters": size})
    head["outputs"] = tensors
    header = orjson.dumps(head, option=orjson.OPT_SERIALIZE_NUMPY)
    return b"".join((MARK, _LENGTH.pack(len(header)), header, *chunks))
