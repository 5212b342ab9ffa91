"""A small closed-loop gRPC load generator for V2 ModelInfer, the same for every server measured.

Like wrk's connections: ``connections`` channels, each with one call in flight at a time, for ``duration``
seconds; the request is sent pre-serialized and the answer is not parsed, so the client's cost per call
is the same whatever the server. Gives requests/s, p50 and p99 in ms, and the count of failed calls.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np

from serving.v2grpc import grpc_predict_v2_pb2 as pb

METHOD = "/inference.GRPCInferenceService/ModelInfer"
OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


def infer_request(model: str, x: np.ndarray, raw: bool = True) -> bytes:
    """A serialized ModelInferRequest for one FP32 input named ``input`` (raw contents, as tritonclient sends)."""
    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="input", datatype="FP32", shape=x.shape)
    if raw:
        request.raw_input_contents.append(x.astype("<f4").tobytes())
    else:
        tensor.contents.fp32_contents.extend(x.ravel().tolist())
    return request.SerializeToString()


async def _one_call(target: str, body: bytes) -> pb.ModelInferResponse:
    async with grpc.aio.insecure_channel(target, options=OPTIONS) as channel:
        call = channel.unary_unary(METHOD)
        return pb.ModelInferResponse.FromString(await call(body, timeout=10))


def check(target: str, body: bytes) -> str:
    """'' when the server answers the request with outputs, else why not."""
    try:
        response = asyncio.run(_one_call(target, body))
    except grpc.RpcError as exc:
        return f"{exc.code().name}: {exc.details()}"[:200]  # type: ignore[attr-defined]
    return "" if response.outputs else "an answer without outputs"


async def _load(target: str, body: bytes, connections: int, duration: float) -> dict:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration

    async def worker(channel: grpc.aio.Channel) -> None:
        nonlocal errors
        call = channel.unary_unary(METHOD)
        while (began := time.perf_counter()) < deadline:
            try:
                await call(body, timeout=30)
            except grpc.RpcError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - began)

    channels = [grpc.aio.insecure_channel(target, options=OPTIONS) for _ in range(connections)]
    began = time.perf_counter()
    try:
        await asyncio.gather(*(worker(c) for c in channels))
    finally:
        for channel in channels:
            await channel.close()
    elapsed = time.perf_counter() - began
    ms = np.array(latencies) * 1e3 if latencies else np.array([float("nan")])
    return {"rps": len(latencies) / elapsed, "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "non2xx": errors, "socket_errors": ""}  # fmt: skip


def load(target: str, body: bytes, connections: int, duration: float) -> dict:
    """Closed-loop load on ``target`` (host:port) with ``connections`` channels for ``duration`` seconds."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_load(target, body, connections, duration))
    return uvloop.run(_load(target, body, connections, duration))
