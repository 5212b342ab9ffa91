"""The binary tensor data extension over REST: what only this wire has (header lengths, binary sizes, BYTES
length prefixes, which outputs come back binary), and every malformed variant is a 400 naming the field."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest
from aiohttp import ClientSession

from serving.gateway import Gateway
from serving.registry import ModelRegistry
from tests.serving.helpers import identity_onnx, mlp_onnx
from tests.serving.wires import HEADER, parse_rest

ROW = np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 64)


@pytest.fixture
async def gateway(start_gateway, registry: ModelRegistry) -> Gateway:  # type: ignore[no-untyped-def]
    registry.register("digits", mlp_onnx(0))
    registry.register("words", identity_onnx(("BYTES",)))
    gateway = await start_gateway()
    async with ClientSession() as http:
        for name in ("digits", "words"):
            async with http.post(f"http://127.0.0.1:{gateway.port}/v1/models/{name}/revisions", json={}) as r:
                assert r.status == 201
    return gateway


async def post(http: ClientSession, gateway: Gateway, body: bytes, header: str | None, model: str = "digits"):  # type: ignore[no-untyped-def]
    headers = {HEADER: header} if header is not None else {}
    async with http.post(f"http://127.0.0.1:{gateway.port}/v2/models/{model}/infer", data=body, headers=headers) as r:
        return r.status, r.headers, await r.read()


def binary_request(
    tensor: dict | None = None, data: bytes = ROW.tobytes(), **top: object
) -> tuple[bytes, str]:  # fmt: skip
    """A binary request for the digits model: (body, header length)."""
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 64], "parameters": {"binary_data_size": 256}} | (
        tensor or {}
    )
    head = orjson.dumps({"inputs": [tensor], **top})
    return head + data, str(len(head))


async def test_outputs_come_binary_only_where_asked(gateway: Gateway, http: ClientSession) -> None:
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 64], "data": ROW.ravel().tolist()}
    outputs = [{"name": "logits", "parameters": {"binary_data": True}}, {"name": "probabilities"}]
    body = orjson.dumps({"inputs": [tensor], "outputs": outputs})
    status, headers, data = await post(http, gateway, body, None)
    assert status == 200 and headers["Content-Type"] == "application/octet-stream"
    head = orjson.loads(data[: int(headers[HEADER])])
    logits, probabilities = head["outputs"]
    assert logits["parameters"] == {"binary_data_size": 40} and "data" not in logits
    assert "data" in probabilities and "parameters" not in probabilities
    assert len(data) == int(headers[HEADER]) + 40


async def test_binary_inputs_without_binary_outputs_answer_plain_json(gateway: Gateway, http: ClientSession) -> None:
    status, headers, data = await post(http, gateway, *binary_request())
    assert status == 200 and headers["Content-Type"] == "application/json" and HEADER not in headers
    assert parse_rest(status, None, data).outputs["logits"][1].shape == (1, 10)  # type: ignore[index]


async def test_binary_and_json_inputs_mix_in_one_request(gateway: Gateway, http: ClientSession) -> None:
    words = ["héllo", "", "x"]
    raw = b"".join(struct.pack("<I", len(w.encode())) + w.encode() for w in words)
    head = orjson.dumps({"inputs": [{"name": "x_BYTES", "datatype": "BYTES", "shape": [1, 3],
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "parameters": {"binary_data_output": True}})  # fmt: skip
    status, headers, data = await post(http, gateway, head + raw, str(len(head)), "words")
    assert status == 200
    assert parse_rest(status, headers[HEADER], data).outputs["y_BYTES"][1].tolist() == [words]  # type: ignore[index]


def _bytes_request(raw: bytes, size: int | None = None, shape: tuple = (1, 3)) -> tuple[bytes, str]:
    tensor = {"name": "x_BYTES", "datatype": "BYTES", "shape": list(shape),
              "parameters": {"binary_data_size": len(raw) if size is None else size}}  # fmt: skip
    head = orjson.dumps({"inputs": [tensor]})
    return head + raw, str(len(head))


def _huge_size() -> tuple[bytes, str]:
    body, length = binary_request()
    head = body[: int(length)].replace(b":256}", b":1" + b"0" * 30 + b"}")
    return head + ROW.tobytes(), str(len(head))


MALFORMED = {
    "header length beyond the body": (
        (binary_request()[0], "99999"),
        "Inference-Header-Content-Length 99999 is beyond",
    ),
    "header length not a number": ((binary_request()[0], "12a"), "Inference-Header-Content-Length must be a whole"),
    "header length negative": ((binary_request()[0], "-5"), "Inference-Header-Content-Length must be a whole"),
    "header length cuts the JSON": ((binary_request()[0], "20"), "JSON header"),
    "missing binary part": (binary_request(data=b""), "binary_data_size 256 runs past the end of the binary part"),
    "binary part too short": (binary_request(data=b"\0" * 100), "runs past the end of the binary part (100 bytes"),
    "size does not fit the shape": (
        binary_request({"parameters": {"binary_data_size": 128}}, data=b"\0" * 128),
        "needs 256 bytes",
    ),
    "bytes nobody claims": (binary_request(data=b"\0" * 300), "44 bytes that no input's binary_data_size takes"),
    "negative size": (binary_request({"parameters": {"binary_data_size": -4}}), "'binary_data_size' must be a non-neg"),
    "huge size": (
        binary_request({"parameters": {"binary_data_size": 2**62}}),
        "binary_data_size 4611686018427387904 runs",
    ),
    "size beyond JSON integers": (_huge_size(), "'binary_data_size' must be a non-negative integer"),
    "size is a string": (binary_request({"parameters": {"binary_data_size": "256"}}), "'binary_data_size' must be"),
    "data and binary size": (binary_request({"data": [0.0] * 64}), "has both 'data' and 'binary_data_size'"),
    "binary_data_output not a bool": (
        binary_request(parameters={"binary_data_output": "yes"}),
        "parameter 'binary_data_output' must be true or false",
    ),
    "BYTES prefix past the end": (_bytes_request(struct.pack("<I", 50) + b"ab" + b"\0" * 8), "says 50 bytes"),
    "BYTES prefix cut": (
        _bytes_request(struct.pack("<I", 1) + b"a" + struct.pack("<I", 1) + b"b\0\0\0"),
        "length prefix",
    ),
    "BYTES fewer elements": (_bytes_request(b"\0" * 8), "3 BYTES elements need at least 12 bytes"),
    "BYTES bytes after the elements": (_bytes_request(b"\0" * 16), "4 bytes follow its 3 BYTES elements"),
    "BYTES not UTF-8": (_bytes_request(b"".join(struct.pack("<I", 1) + b"\xff" for _ in range(3))), "is not UTF-8"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_each_malformed_binary_request_is_400_naming_the_field(
    gateway: Gateway, http: ClientSession, case: str
) -> None:
    (body, header), message = MALFORMED[case]
    model = "words" if case.startswith("BYTES") else "digits"
    pids = {r.pid for pool in gateway.pools.values() for r in pool.replicas}
    status, headers, data = await post(http, gateway, body, header, model)
    assert status == 400, data[:300]
    assert headers["Content-Type"] == "application/json"
    assert message in orjson.loads(data)["error"]
    assert pids <= {r.pid for pool in gateway.pools.values() for r in pool.replicas}
