"""``python -m serving.gateway`` as its own process: settings from the environment, replicas die with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from infra.errors import Unavailable
from infra.localservices import free_port
from infra.store import open_store
from serving.client import ServingClient
from serving.registry import ModelRegistry
from serving.v2grpc import grpc_predict_v2_pb2 as pb
from serving.v2grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.eventually import eventually, eventually_sync
from tests.ipv6 import needs_ipv6_loopback
from tests.serving.helpers import children_of, mlp_onnx
from tests.unguarded import UNGUARDED


def test_gateway_process_serves_and_takes_its_replicas_down(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path / 'artifacts'}")
    ModelRegistry(store).register("digits", mlp_onnx())
    port = free_port()
    env = {**os.environ, "KNFLOW_DATA_DIR": str(tmp_path), "KNFLOW_ARTIFACTS": store.url, "KNFLOW_LOG_LEVEL": "WARNING",
           "KNFLOW_GATEWAY_PORT": str(port), "KNFLOW_GRPC_PORT": str(free_port()), **UNGUARDED}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "serving.gateway"], env=env, cwd=Path(__file__).parents[2])
    try:
        client = ServingClient(f"http://127.0.0.1:{port}", timeout=10)
        eventually_sync(lambda: _deployed(client), 30, "the gateway process to take a deployment")
        out = client.infer("digits", {"input": np.zeros((1, 64), np.float32)})
        assert out["logits"].shape == (1, 10)
        zygotes = children_of(proc.pid)
        replicas = set().union(*(children_of(z) for z in zygotes))
        assert len(zygotes) == 1 and len(replicas) == 1
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(15)
    eventually_sync(
        lambda: not any(Path(f"/proc/{p}").exists() for p in zygotes | replicas),
        10,
        "the zygote and replica processes to exit",
    )


@needs_ipv6_loopback
def test_a_gateway_on_ipv6_loopback_answers_rest_and_grpc_there(tmp_path: Path) -> None:
    """``KNFLOW_HOST=::1``: REST on ``http://[::1]:PORT`` and V2 gRPC on ``[::1]:PORT`` (gRPC binds only the bracketed
    form), nothing on 127.0.0.1."""
    store = open_store(f"file://{tmp_path / 'artifacts'}")
    ModelRegistry(store).register("digits", mlp_onnx())
    port, grpc_port = free_port(), free_port()
    env = {**os.environ, "KNFLOW_DATA_DIR": str(tmp_path), "KNFLOW_ARTIFACTS": store.url, "KNFLOW_LOG_LEVEL": "WARNING",
           "KNFLOW_HOST": "::1", "KNFLOW_GATEWAY_PORT": str(port), "KNFLOW_GRPC_PORT": str(grpc_port),
           **UNGUARDED}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "serving.gateway"], env=env, cwd=Path(__file__).parents[2])
    try:
        client = ServingClient(f"http://[::1]:{port}", timeout=10)
        eventually_sync(lambda: _deployed(client), 30, "the gateway on [::1] to take a deployment")
        assert client.infer("digits", {"input": np.zeros((1, 64), np.float32)})["logits"].shape == (1, 10)
        with grpc.insecure_channel(f"[::1]:{grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ModelReady(pb.ModelReadyRequest(name="digits"), timeout=10).ready
        with pytest.raises(Unavailable):
            ServingClient(f"http://127.0.0.1:{port}", timeout=2).models()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(15)


def _deployed(client: ServingClient) -> bool:
    try:
        client.deploy("digits", 1)
    except Unavailable:
        return False  # not listening yet
    return True


async def test_stopping_the_gateway_lets_in_flight_requests_finish(start_gateway, registry) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    from aiohttp import ClientSession

    from tests.serving.helpers import deploy_and_answer, infer_body

    registry.register("digits", mlp_onnx(hidden=256))
    gateway = await start_gateway()
    base = f"http://127.0.0.1:{gateway.port}"
    body = infer_body(np.ones((256, 64), np.float32))
    async with ClientSession() as http:
        await deploy_and_answer(http, base, body)

        async def one() -> int:
            async with http.post(f"{base}/v2/models/digits/infer", data=body) as r:
                await r.read()
                return r.status

        requests = [asyncio.create_task(one()) for _ in range(24)]
        pool = gateway.pools["digits-00001"]
        await eventually(lambda: pool.inflight >= 4, 10, "requests in flight")
        await gateway.stop()
        statuses = await asyncio.gather(*requests, return_exceptions=True)
    finished = [s for s in statuses if isinstance(s, int)]
    assert len(finished) >= 4 and set(finished) == {200}, statuses
