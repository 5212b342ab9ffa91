"""Run in the tritonclient peer environment: NVIDIA's standard V2 clients (HTTP with binary data, gRPC) against a
knflow gateway. Usage: triton_client.py HTTP_HOST:PORT GRPC_HOST:PORT; prints what it got as JSON."""

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

ROWS = (np.arange(4 * 64) % 17 / 16).astype(np.float32).reshape(4, 64)
MIXED = {
    "x_FP16": np.array([[0.5, -1.5, 2.0]], np.float16),
    "x_INT8": np.array([[-128, 0, 127]], np.int8),
    "x_UINT64": np.array([[0, 2**64 - 1, 7]], np.uint64),
    "x_BOOL": np.array([[True, False, True]]),
    "x_BYTES": np.array([["héllo".encode(), b"", b"z"]], dtype=np.object_),
}
DATATYPES = {"x_FP16": "FP16", "x_INT8": "INT8", "x_UINT64": "UINT64", "x_BOOL": "BOOL", "x_BYTES": "BYTES"}


def plain(array: np.ndarray) -> list:
    return [x.decode() if isinstance(x, bytes) else x for x in array.reshape(-1).tolist()]


def run(module, client, binary: dict) -> dict:  # type: ignore[no-untyped-def]
    out = {"live": client.is_server_live(), "ready": client.is_model_ready("digits")}
    digits = module.InferInput("input", [4, 64], "FP32")
    digits.set_data_from_numpy(ROWS, **binary)
    wanted = [module.InferRequestedOutput("logits", **binary)]
    out["logits"] = plain(client.infer("digits", [digits], outputs=wanted, request_id="t1").as_numpy("logits"))
    inputs = []
    for name, array in MIXED.items():
        inputs.append(module.InferInput(name, list(array.shape), DATATYPES[name]))
        inputs[-1].set_data_from_numpy(array, **binary)
    result = client.infer("mixed", inputs)
    out["mixed"] = {name: plain(result.as_numpy("y" + name[1:])) for name in MIXED}
    return out


if __name__ == "__main__":
    http_target, grpc_target = sys.argv[1:3]
    answers = {
        "http": run(httpclient, httpclient.InferenceServerClient(http_target), {"binary_data": True}),
        "grpc": run(grpcclient, grpcclient.InferenceServerClient(grpc_target), {}),
    }
    print(json.dumps(answers))
