"""Run in the kserve peer environment: KServe's own Python clients (InferenceRESTClient with binary data,
InferenceGRPCClient) against a knflow gateway. Usage: kserve_client.py HTTP_BASE GRPC_HOST:PORT; prints JSON."""

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput

ROWS = (np.arange(4 * 64) % 17 / 16).astype(np.float32).reshape(4, 64)


def request(binary: bool) -> InferRequest:
    digits = InferInput("input", [4, 64], "FP32")
    digits.set_data_from_numpy(ROWS, binary_data=binary)
    wanted = [RequestedOutput("logits", {"binary_data": True} if binary else None)]
    return InferRequest(model_name="digits", infer_inputs=[digits], request_id="k1", request_outputs=wanted)


def logits(response) -> list:  # type: ignore[no-untyped-def]
    (output,) = [o for o in response.outputs if o.name == "logits"]
    return output.as_numpy().reshape(-1).tolist()


async def main(base: str, target: str) -> dict:
    answers = {}
    async with InferenceRESTClient(RESTConfig(protocol="v2", verify=False)) as rest:
        answers["http_binary"] = logits(await rest.infer(base, request(True), model_name="digits"))
        answers["http_json"] = logits(await rest.infer(base, request(False), model_name="digits"))
        answers["http_ready"] = await rest.is_model_ready(base, "digits")
    async with InferenceGRPCClient(target) as grpc:
        answers["grpc"] = logits(await grpc.infer(request(False)))
        answers["grpc_ready"] = await grpc.is_model_ready("digits")
    return answers


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2]))))
