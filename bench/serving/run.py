"""Serving benchmark: knflow vs Seldon MLServer 1.7.1 vs KServe ModelServer 0.21.0 on one ONNX model under wrk.

    /work/main/.venv/bin/python bench/serving/run.py [--duration 8] [--connections 1,16,64]

The same digits MLP (64 -> 128 -> 10, trained with torch, exported to ONNX) is served by each
server in turn, with one intra-op thread, and hit by the same wrk load (V2 infer, 1x64 FP32 JSON,
one thread). Also measured: knflow cold start from zero replicas, and spawn -> first 2xx for all.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from infra.localservices import free_port  # noqa: E402  (after the path is set: run as a script)

HERE = Path(__file__).resolve().parent
VENVS = Path("/work/venvs")
PEERS = {"mlserver": ["mlserver==1.7.1", "onnxruntime"], "kserve": ["kserve==0.21.0", "onnxruntime"]}


def build_model(out: Path) -> Path:
    """Train a small MLP on sklearn's digits with torch and export it to ONNX."""
    import torch
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    optim = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        optim.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optim.step()
    path = out / "model.onnx"
    torch.onnx.export(
        model.eval(), (x[:1],), str(path), input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
    )  # fmt: skip
    accuracy = (model(x).argmax(1) == y).float().mean().item()
    print(f"model: digits MLP 64-128-10, train accuracy {accuracy:.3f}, {path.stat().st_size} bytes ONNX")
    return path


def ensure_venv(name: str) -> Path:
    """The peer's venv, created with pip if missing (never with torch)."""
    python = VENVS / name / "bin" / "python"
    if not python.exists():
        subprocess.run(
            [sys.executable, "-m", "venv", str(VENVS / name)],
            check=True,
        )
        subprocess.run([str(VENVS / name / "bin" / "pip"), "install", "-q", *PEERS[name]], check=True)
    has_torch = subprocess.run([str(python), "-c", "import torch"], capture_output=True).returncode == 0
    print(f"peer venv {name}: {VENVS / name} (torch importable: {has_torch})")
    return python


def post(url: str, body: bytes, timeout: float = 2.0) -> int:
    request = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return response.status
    except Exception:
        return 0


def until_2xx(url: str, body: bytes, began: float, timeout: float = 120.0) -> float:
    """Seconds from ``began`` to the first 2xx answer to ``body`` at ``url``."""
    while time.monotonic() - began < timeout:
        if 200 <= post(url, body) < 300:
            return time.monotonic() - began
        time.sleep(0.01)
    raise RuntimeError(f"{url} never answered 2xx")


def wrk(url: str, body: bytes, connections: int, duration: int, workdir: Path) -> dict:
    script = workdir / "post.lua"
    script.write_text(
        f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [[{body.decode()}]]\n'
    )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)

    def pct(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    return {"rps": rps, "p50": pct("50"), "p99": pct("99"), "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(0) if errors else ""}  # fmt: skip


class Knflow:
    """The knflow gateway as its own process (``python -m serving.gateway``) with the model registered."""

    def __init__(self, workdir: Path, model: Path, **serving: str):
        from infra.store import open_store
        from serving.registry import ModelRegistry

        self.port = free_port()
        self.data = workdir / f"knflow-{self.port}"
        store = open_store(f"file://{self.data / 'artifacts'}")
        ModelRegistry(store).register("digits", model)
        env = {**os.environ, "KNFLOW_DATA_DIR": str(self.data), "KNFLOW_ARTIFACTS": store.url,
               "KNFLOW_GATEWAY_PORT": str(self.port), "KNFLOW_LOG_LEVEL": "WARNING",
               "PYTHONPATH": str(ROOT)}  # fmt: skip
        env.update({f"KNFLOW_SERVING_{k.upper()}": str(v) for k, v in serving.items()})
        self.began = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "serving.gateway"], cwd=ROOT, env=env)
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/v2/models/digits/infer"

    def deploy(self, **kw: object) -> str:
        from serving.client import ServingClient

        deadline = time.monotonic() + 30
        while True:
            try:
                return ServingClient(self.base).deploy("digits", 1, **kw)["revision"]  # type: ignore[arg-type]
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def replicas(self, revision: str) -> int:
        with urllib.request.urlopen(f"{self.base}/metrics") as r:
            text = r.read().decode()
        m = re.search(rf'knflow_replicas{{revision="{revision}"}} (\d+)', text)
        return int(m.group(1)) if m else 0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(1)
            self.proc.kill()
            raise


def start_mlserver(workdir: Path, model: Path, python: Path) -> tuple[subprocess.Popen, str]:
    port, grpc, metrics = free_port(), free_port(), free_port()
    d = workdir / "mlserver"
    d.mkdir(exist_ok=True)
    shutil.copy(HERE / "mlserver_model.py", d / "onnx_model.py")
    shutil.copy(model, d / "model.onnx")
    (d / "settings.json").write_bytes(orjson.dumps({"http_port": port, "grpc_port": grpc, "metrics_port": metrics,
                                                    "parallel_workers": 0, "debug": False}))  # fmt: skip
    (d / "model-settings.json").write_bytes(orjson.dumps({"name": "digits", "implementation": "onnx_model.OnnxModel",
                                                          "parameters": {"uri": str(d / "model.onnx")}}))  # fmt: skip
    mlserver = python.parent / "mlserver"
    proc = subprocess.Popen(
        [str(mlserver), "start", str(d)], cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return proc, f"http://127.0.0.1:{port}/v2/models/digits/infer"


def start_kserve(workdir: Path, model: Path, python: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([str(python), str(HERE / "kserve_server.py"), str(model), str(port)], cwd=workdir,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return proc, f"http://127.0.0.1:{port}/v2/models/digits/infer"


def load(name: str, url: str, body: bytes, conns: list[int], duration: int, workdir: Path) -> dict[int, dict]:
    for _ in range(200):  # warm up
        post(url, body)
    results = {}
    for c in conns:
        results[c] = r = wrk(url, body, c, duration, workdir)
        print(f"  {name:<16} c={c:<3} {r['rps']:>9.0f} req/s  p50 {r['p50']:7.2f} ms  p99 {r['p99']:7.2f} ms"
              f"  non-2xx {r['non2xx']} {r['socket_errors']}", flush=True)  # fmt: skip
    return results


def knflow_cold_start(workdir: Path, model: Path, body: bytes, rounds: int) -> list[float]:
    """Zero replicas -> first 2xx, repeatedly: wait for scale to zero, then time one request."""
    gw = Knflow(workdir, model, scale_to_zero_grace_s="0.2", stable_window_s="0.3", autoscale_tick_s="0.05",
                max_replicas="1")  # fmt: skip
    try:
        revision = gw.deploy()
        until_2xx(gw.url, body, time.monotonic())  # first fetch of the model into the local cache
        samples = []
        for _ in range(rounds):
            deadline = time.monotonic() + 20
            while gw.replicas(revision) > 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.05)
            began = time.monotonic()
            assert post(gw.url, body, timeout=10) == 200
            samples.append(time.monotonic() - began)
        return samples
    finally:
        gw.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", default="1,16,64")
    parser.add_argument("--cold-rounds", type=int, default=15)
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--batch-delay-ms", type=float, default=0.0, help="max_delay_ms of the batching run")
    args = parser.parse_args()
    conns = [int(c) for c in args.connections.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="knflow-bench-"))
    model = build_model(workdir)
    body = orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64],
                                     "data": np.random.default_rng(0).random(64).round(4).tolist()}]})  # fmt: skip
    cpu = platform.processor() or platform.machine()
    print(f"conditions: {os.cpu_count()} CPUs ({cpu}), python "
          f"{platform.python_version()}, wrk -t1 -d{args.duration}s --latency, body {len(body)} B (1x64 FP32 JSON), "
          "ORT intra-op threads 1 everywhere, knflow max_replicas 1, all on 127.0.0.1, "
          "run one after another")  # fmt: skip
    results: dict[str, dict[int, dict]] = {}
    spawn: dict[str, float] = {}

    batched = {"max_batch": 32, "max_delay_ms": args.batch_delay_ms}
    for name, batching in (("knflow", None), ("knflow+batching", batched)):
        gw = Knflow(workdir, model, max_replicas="1")
        try:
            gw.deploy(batching=batching)
            first = until_2xx(gw.url, body, gw.began)
            spawn.setdefault("knflow", first)
            results[name] = load(name, gw.url, body, conns, args.duration, workdir)
        finally:
            gw.stop()

    if not args.skip_peers:
        for name, starter in (("mlserver", start_mlserver), ("kserve", start_kserve)):
            python = ensure_venv(name)
            began = time.monotonic()
            proc, url = starter(workdir, model, python)
            try:
                spawn[name] = until_2xx(url, body, began)
                results[name] = load(name, url, body, conns, args.duration, workdir)
            finally:
                proc.terminate()
                proc.wait(15)

    cold = knflow_cold_start(workdir, model, body, args.cold_rounds)
    report(results, spawn, cold, conns)
    shutil.rmtree(workdir, ignore_errors=True)


def report(results: dict, spawn: dict, cold: list[float], conns: list[int]) -> None:
    print("\nrequests/s, p50 ms, p99 ms")
    for c in conns:
        row = "  ".join(f"{n} {r[c]['rps']:.0f}/{r[c]['p50']:.2f}/{r[c]['p99']:.2f}" for n, r in results.items())
        print(f"  c={c:<3} {row}")
    for peer in ("mlserver", "kserve"):
        if peer not in results:
            continue
        for c in conns:
            k, p = results["knflow"][c], results[peer][c]
            print(
                f"  knflow/{peer} c={c}: {k['rps'] / p['rps']:.2f}x requests/s, p99 {k['p99']:.2f} vs {p['p99']:.2f} ms"
            )
    print("\nstart to first 2xx (process spawn, s): " + ", ".join(f"{n} {v:.2f}" for n, v in spawn.items()))
    ms = sorted(x * 1e3 for x in cold)
    print(
        f"knflow cold start from zero replicas ({len(ms)} rounds, model cached locally): median "
        f"{statistics.median(ms):.1f} ms, min {ms[0]:.1f}, max {ms[-1]:.1f}"
    )


if __name__ == "__main__":
    main()
