"""Serving benchmark: knflow vs Seldon MLServer 1.7.1 vs KServe ModelServer 0.21.0 on one ONNX model, V2 REST under
wrk and V2 gRPC under one asyncio load generator (bench/serving/grpcload.py), every server in the same run.

    python bench/serving/run.py [--duration 8] [--connections 1,16,64] [--skip-peers] [--only json]

Phases (the same digits MLP, 64 -> 128 -> 10, one intra-op thread everywhere, one server after another):
  json        REST, 1x64 FP32 as JSON, at each of --connections
  json1000    REST, 1000x64 FP32 as JSON, 16 connections
  binary1000  REST with binary tensor data in and out, 1000x64 FP32, 16 connections
  grpc        gRPC ModelInfer, 1x64 FP32 raw contents, 1 and 16 connections
  grpc1000    gRPC ModelInfer, 1000x64 FP32 raw contents, 16 connections
knflow+batching runs the json phase only. Also measured: knflow cold start from zero replicas, and spawn -> first 2xx.
Peers are installed on first use into .venv-peers/ (infra/peers.py).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench.serving import grpcload  # noqa: E402  (after the path is set: run as a script)
from bench.serving.servers import Knflow, Server, start_kserve, start_mlserver  # noqa: E402

HEADER = "Inference-Header-Content-Length"
BATCH = 1000


@dataclass(frozen=True)
class Phase:
    """One load: a request body over REST (``headers``) or gRPC, at some connection counts."""

    name: str
    body: bytes
    connections: tuple[int, ...]
    grpc: bool = False
    headers: dict[str, str] = field(default_factory=dict)


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


def phases(conns: list[int]) -> list[Phase]:
    # 4-digit values (as float64, so JSON carries them short); binary and gRPC carry them as FP32
    one = np.random.default_rng(0).random((1, 64)).round(4)
    batch = np.random.default_rng(1).random((BATCH, 64)).round(4)

    def json_body(x: np.ndarray) -> bytes:
        tensor = {"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
        return orjson.dumps({"inputs": [tensor]})

    raw = batch.astype("<f4").tobytes()
    tensor = {"name": "input", "datatype": "FP32", "shape": [BATCH, 64], "parameters": {"binary_data_size": len(raw)}}
    head = orjson.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}})
    binary_headers = {HEADER: str(len(head)), "Content-Type": "application/octet-stream"}
    return [
        Phase("json", json_body(one), tuple(conns)),
        Phase("json1000", json_body(batch), (16,)),
        Phase("binary1000", head + raw, (16,), headers=binary_headers),
        Phase("grpc", grpcload.infer_request("digits", one.astype(np.float32)), (1, 16), grpc=True),
        Phase("grpc1000", grpcload.infer_request("digits", batch.astype(np.float32)), (16,), grpc=True),
    ]


def post(url: str, body: bytes, headers: dict[str, str] | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except Exception as exc:
        return 0, str(exc).encode()


def until_2xx(url: str, body: bytes, began: float, timeout: float = 120.0) -> float:
    """Seconds from ``began`` to the first 2xx answer to ``body`` at ``url``."""
    while time.monotonic() - began < timeout:
        if 200 <= post(url, body, timeout=2.0)[0] < 300:
            return time.monotonic() - began
        time.sleep(0.01)
    raise RuntimeError(f"{url} never answered 2xx")


def wrk(url: str, phase: Phase, connections: int, duration: int, workdir: Path) -> dict:
    (workdir / "body.bin").write_bytes(phase.body)
    headers = {"Content-Type": "application/json", **phase.headers}
    script = workdir / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        + "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items())
        + f'local f = io.open("{workdir / "body.bin"}", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
    )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "--latency", "-s", str(script), url],
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


def refusal(server: Server, phase: Phase) -> str:
    """'' when the server answers the phase's request, else what it said (a peer may lack an extension)."""
    if phase.grpc:
        return grpcload.check(server.grpc, phase.body)
    status, answer = post(server.url, phase.body, phase.headers, timeout=30.0)
    return "" if status == 200 else f"HTTP {status}: {answer[:160]!r}"


def measure(server: Server, plan: list[Phase], duration: int, workdir: Path) -> dict[str, dict[int, dict]]:
    results: dict[str, dict[int, dict]] = {}
    for phase in plan:
        why = refusal(server, phase)
        if why:
            print(f"  {server.name:<16} {phase.name:<10} not measured: {why}", flush=True)
            continue
        for _ in range(100):  # warm up
            if phase.grpc:
                break
            post(server.url, phase.body, phase.headers)
        results[phase.name] = {}
        for c in phase.connections:
            if phase.grpc:
                grpcload.load(server.grpc, phase.body, 2, 1.0)  # warm up
                r = grpcload.load(server.grpc, phase.body, c, duration)
            else:
                r = wrk(server.url, phase, c, duration, workdir)
            results[phase.name][c] = r
            print(f"  {server.name:<16} {phase.name:<10} c={c:<3} {r['rps']:>8.0f} req/s  p50 {r['p50']:8.2f} ms  "
                  f"p99 {r['p99']:8.2f} ms  non-2xx {r['non2xx']} {r['socket_errors']}", flush=True)  # fmt: skip
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
            assert post(gw.url, body, timeout=10)[0] == 200
            samples.append(time.monotonic() - began)
        return samples
    finally:
        gw.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", default="1,16,64")
    parser.add_argument("--cold-rounds", type=int, default=15)
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated phases to run (default: all)")
    parser.add_argument("--batch-delay-ms", type=float, default=0.0, help="max_delay_ms of the batching run")
    args = parser.parse_args()
    conns = [int(c) for c in args.connections.split(",")]
    plan = [p for p in phases(conns) if not args.only or p.name in args.only.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="knflow-bench-"))
    model = build_model(workdir)
    small = phases(conns)[0].body
    cpu = platform.processor() or platform.machine()
    bodies = ", ".join(f"{p.name} {len(p.body)} B" for p in plan)
    print(f"conditions: {os.cpu_count()} CPUs ({cpu}), python {platform.python_version()}, load average "
          f"{os.getloadavg()[0]:.1f}; REST: wrk -t1 -d{args.duration}s --timeout 10s --latency; gRPC: "
          f"bench/serving/grpcload.py (one process, uvloop, closed loop, -d{args.duration}s); bodies: {bodies}; "
          "ORT intra-op threads 1, knflow max_replicas 1, all on 127.0.0.1, one server at a time")  # fmt: skip
    results: dict[str, dict[str, dict[int, dict]]] = {}
    spawn: dict[str, float] = {}
    batched = {"max_batch": 32, "max_delay_ms": args.batch_delay_ms}
    for name, batching in (("knflow", None), ("knflow+batching", batched)):
        gw = Knflow(workdir, model, max_replicas="1")
        gw.name = name
        try:
            gw.deploy(batching=batching)
            spawn.setdefault("knflow", until_2xx(gw.url, small, gw.began))
            results[name] = measure(gw, plan if batching is None else plan[:1], args.duration, workdir)
        finally:
            gw.stop()
    if not args.skip_peers:
        for starter in (start_mlserver, start_kserve):
            server = starter(workdir, model)
            try:
                spawn[server.name] = until_2xx(server.url, small, server.began)
                results[server.name] = measure(server, plan, args.duration, workdir)
            finally:
                server.stop()
    cold = knflow_cold_start(workdir, model, small, args.cold_rounds) if args.cold_rounds else []
    report(results, spawn, cold)
    shutil.rmtree(workdir, ignore_errors=True)


def report(results: dict, spawn: dict, cold: list[float]) -> None:
    print("\nrequests/s / p50 ms / p99 ms")
    rows = sorted({(phase, c) for r in results.values() for phase, by_c in r.items() for c in by_c}, key=str)
    for phase, c in rows:
        cells = [f"{n} {r[phase][c]['rps']:.0f}/{r[phase][c]['p50']:.2f}/{r[phase][c]['p99']:.2f}"
                 for n, r in results.items() if c in r.get(phase, {})]  # fmt: skip
        print(f"  {phase:<10} c={c:<3} " + "  ".join(cells))
    for peer in ("mlserver", "kserve"):
        for phase, c in rows:
            k, p = results["knflow"].get(phase, {}).get(c), results.get(peer, {}).get(phase, {}).get(c)
            if k and p:
                print(f"  knflow/{peer} {phase} c={c}: {k['rps'] / p['rps']:.2f}x requests/s, "
                      f"p99 {k['p99']:.2f} vs {p['p99']:.2f} ms")  # fmt: skip
    print("\nstart to first 2xx (process spawn, s): " + ", ".join(f"{n} {v:.2f}" for n, v in spawn.items()))
    if cold:
        ms = sorted(x * 1e3 for x in cold)
        print(f"knflow cold start from zero replicas ({len(ms)} rounds, model cached locally): median "
              f"{statistics.median(ms):.1f} ms, min {ms[0]:.1f}, max {ms[-1]:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
