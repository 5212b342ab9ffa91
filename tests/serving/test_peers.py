"""Interoperability with the standard V2 clients: tritonclient (HTTP with binary data, gRPC) and KServe's own
Python clients (REST, gRPC), each in its own environment under .venv-peers/, against a live gateway process
(which runs on uvloop), getting the same numbers as the JSON path."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
import urllib3

from infra.errors import Unavailable
from infra.peers import peer_python
from infra.store import open_store
from serving.registry import ModelRegistry
from tests.serving.helpers import identity_onnx, live_gateway, mlp_onnx

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
PEERS = Path(__file__).parent / "peers"
ROWS = (np.arange(4 * 64) % 17 / 16).astype(np.float32).reshape(4, 64)  # what the peer scripts send
MIXED = ("FP16", "INT8", "UINT64", "BOOL", "BYTES")


def _python(peer: str) -> Path:
    try:
        return peer_python(peer)
    except Unavailable as exc:  # fail with the reason, never skip
        pytest.fail(f"peer {peer} could not be installed: {exc}")


@pytest.fixture(scope="module")
def peers_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """``python -m serving.gateway`` with the digits MLP and a mixed-datatype identity model; (HTTP base, gRPC port)."""
    tmp = tmp_path_factory.mktemp("peers-gateway")
    store = open_store(f"file://{tmp / 'artifacts'}")
    registry = ModelRegistry(store)
    registry.register("digits", mlp_onnx())
    registry.register("mixed", identity_onnx(MIXED))
    with live_gateway(tmp, store, ("digits", "mixed")) as (base, grpc_port, _):
        yield base, grpc_port


def json_path_logits(base: str) -> np.ndarray:
    """The digits logits for the peers' rows through knflow's plain JSON path."""
    tensor = {"name": "input", "datatype": "FP32", "shape": [4, 64], "data": ROWS.ravel().tolist()}
    body = orjson.dumps({"inputs": [tensor], "outputs": [{"name": "logits"}]})
    answer = urllib3.PoolManager().request("POST", f"{base}/v2/models/digits/infer", body=body)
    assert answer.status == 200, answer.data[:300]
    return np.array(orjson.loads(answer.data)["outputs"][0]["data"], np.float32)


def run_peer(peer: str, script: str, *args: str) -> dict:
    done = subprocess.run([str(_python(peer)), str(PEERS / script), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return orjson.loads(done.stdout.strip().splitlines()[-1])


def test_tritonclient_http_binary_and_grpc_get_the_json_paths_numbers(peers_gateway: tuple[str, int]) -> None:
    base, grpc_port = peers_gateway
    want = json_path_logits(base)
    answers = run_peer("tritonclient", "triton_client.py", base.removeprefix("http://"), f"127.0.0.1:{grpc_port}")
    for wire in ("http", "grpc"):
        got = answers[wire]
        assert got["live"] and got["ready"], wire
        np.testing.assert_array_equal(np.array(got["logits"], np.float32), want, err_msg=wire)
        assert got["mixed"] == {
            "x_FP16": [0.5, -1.5, 2.0], "x_INT8": [-128, 0, 127], "x_UINT64": [0, 2**64 - 1, 7],
            "x_BOOL": [True, False, True], "x_BYTES": ["héllo", "", "z"],
        }, wire  # fmt: skip


def test_kserve_rest_and_grpc_clients_get_the_json_paths_numbers(peers_gateway: tuple[str, int]) -> None:
    base, grpc_port = peers_gateway
    want = json_path_logits(base)
    answers = run_peer("kserve", "kserve_client.py", base, f"127.0.0.1:{grpc_port}")
    assert answers["http_ready"] and answers["grpc_ready"]
    for wire in ("http_binary", "http_json", "grpc"):
        np.testing.assert_array_equal(np.array(answers[wire], np.float32), want, err_msg=wire)
