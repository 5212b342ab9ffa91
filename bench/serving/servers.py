"""The servers bench/serving/run.py measures: knflow's gateway, Seldon MLServer and KServe's ModelServer, each
serving the same ONNX model over V2 REST and gRPC on free loopback ports."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import orjson
from prometheus_client.parser import text_string_to_metric_families

from infra.localservices import free_port
from infra.peers import peer_python

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


@dataclass
class Server:
    """A running server: its process, V2 REST infer URL and gRPC target."""

    name: str
    proc: subprocess.Popen
    url: str
    grpc: str
    began: float

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR1)  # knflow dumps its threads' stacks before the kill
            time.sleep(1)
            self.proc.kill()
            raise


class Knflow(Server):
    """The knflow gateway as its own process (``python -m serving.gateway``) with the model registered."""

    def __init__(self, workdir: Path, model: Path, **serving: str):
        from infra.auth import local_admin_headers
        from infra.settings import load_settings
        from infra.store import open_store
        from serving.registry import ModelRegistry

        port, grpc_port = free_port(), free_port()
        data = workdir / f"knflow-{port}"
        store = open_store(f"file://{data / 'artifacts'}")
        ModelRegistry(store).register("digits", model)
        env = {**os.environ, "KNFLOW_DATA_DIR": str(data), "KNFLOW_ARTIFACTS": store.url,
               "KNFLOW_GATEWAY_PORT": str(port), "KNFLOW_GRPC_PORT": str(grpc_port), "KNFLOW_LOG_LEVEL": "WARNING",
               "PYTHONPATH": str(ROOT)}  # fmt: skip
        env.update({f"KNFLOW_SERVING_{k.upper()}": str(v) for k, v in serving.items()})
        self.headers = local_admin_headers(load_settings(env, config_file=None))  # the control API asks for it
        began = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "serving.gateway"], cwd=ROOT, env=env)
        self.base = f"http://127.0.0.1:{port}"
        super().__init__("knflow", proc, f"{self.base}/v2/models/digits/infer", f"127.0.0.1:{grpc_port}", began)

    def deploy(self, **kw: object) -> str:
        from serving.client import ServingClient

        deadline = time.monotonic() + 30
        while True:
            try:
                return ServingClient(self.base, headers=self.headers).deploy("digits", 1, **kw)["revision"]  # type: ignore[arg-type]
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def replicas(self, revision: str) -> int:
        with urllib.request.urlopen(f"{self.base}/metrics") as r:
            text = r.read().decode()
        samples = (s for f in text_string_to_metric_families(text) for s in f.samples)
        return next(
            (int(s.value) for s in samples if s.name == "knflow_replicas" and s.labels == {"revision": revision}), 0
        )


def peer_venv(name: str) -> Path:
    """The peer's Python (its venv under .venv-peers/, installed on first use)."""
    python = peer_python(name)
    has_torch = subprocess.run([str(python), "-c", "import torch"], capture_output=True).returncode == 0
    print(f"peer venv {name}: {python.parent.parent.relative_to(ROOT)} (torch importable: {has_torch})")
    return python


def start_mlserver(workdir: Path, model: Path) -> Server:
    python = peer_venv("mlserver")
    port, grpc, metrics = free_port(), free_port(), free_port()
    d = workdir / "mlserver"
    d.mkdir(exist_ok=True)
    shutil.copy(HERE / "mlserver_model.py", d / "onnx_model.py")
    shutil.copy(model, d / "model.onnx")
    (d / "settings.json").write_bytes(orjson.dumps({"http_port": port, "grpc_port": grpc, "metrics_port": metrics,
                                                    "parallel_workers": 0, "debug": False}))  # fmt: skip
    (d / "model-settings.json").write_bytes(orjson.dumps({"name": "digits", "implementation": "onnx_model.OnnxModel",
                                                          "parameters": {"uri": str(d / "model.onnx")}}))  # fmt: skip
    began = time.monotonic()
    proc = subprocess.Popen([str(python.parent / "mlserver"), "start", str(d)], cwd=d,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return Server("mlserver", proc, f"http://127.0.0.1:{port}/v2/models/digits/infer", f"127.0.0.1:{grpc}", began)


def start_kserve(workdir: Path, model: Path) -> Server:
    python = peer_venv("kserve")
    port, grpc = free_port(), free_port()
    began = time.monotonic()
    proc = subprocess.Popen([str(python), str(HERE / "kserve_server.py"), str(model), str(port), str(grpc)],
                            cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return Server("kserve", proc, f"http://127.0.0.1:{port}/v2/models/digits/infer", f"127.0.0.1:{grpc}", began)
