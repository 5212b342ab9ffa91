"""What inference logging costs serving: one gateway, one model, two revisions of it — one logging every request and
its response to a real broker (100 % sampling), one not — hit in alternating rounds by the same wrk load.

    .venv/bin/python bench/serving/inference_log.py [--duration 8] [--rounds 3] [--connections 16] [--no-pin]

The broker (``python -m eventing.broker``, embedded log) stands for the cluster's broker on other machines: with
``--pin`` (the default when there are 2+ CPUs) it runs on the last CPU and the gateway, its replicas and wrk on the
others, in both phases, so the figure is the gateway's own cost of logging; ``--no-pin`` lets them all share. Printed:
each round's requests/s and p99 and the gateway process's CPU time per request (its own, not its replicas': where
logging's work is done; far steadier than requests/s on a shared machine), the medians with logging off and on and
their ratios, and how many events the gateway published to the broker and dropped during the logged rounds.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import orjson
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench.serving.run import Knflow, Phase, build_model, until_2xx, wrk  # noqa: E402  (after the path is set)
from infra.localservices import free_port, spawn, wait_for_port  # noqa: E402

RUN = {"runid": "run-bench0000000000", "pipeline": "bench"}  # a pipeline no trigger takes: stored, not delivered


def counters(base: str) -> tuple[int, int, float]:
    """(published, dropped) inference-log events of the gateway so far, and its publisher's encoding CPU seconds."""
    with urllib.request.urlopen(f"{base}/metrics") as r:
        text = r.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):  # large counts are written as 1e+06: parse, do not grep
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    published = int(totals.get("knflow_inference_log_published_total", 0))
    dropped = int(totals.get("knflow_inference_log_dropped_total", 0))
    return published, dropped, totals.get("knflow_inference_log_encode_seconds_total", 0.0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def set_traffic(gateway: Knflow, revision: str) -> None:
    from serving.client import ServingClient

    ServingClient(gateway.base, headers=gateway.headers).promote("digits", revision)  # the control API asks a token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--no-pin", action="store_true", help="let broker, gateway and wrk share every CPU")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    pin = not args.no_pin and len(cpus) >= 2
    workdir = Path(tempfile.mkdtemp(prefix="knflow-bench-log-"))
    broker_port = free_port()
    broker_argv = [sys.executable, "-m", "eventing.broker"]
    if pin:
        broker_argv = ["taskset", "-c", str(cpus[-1]), *broker_argv]
        os.sched_setaffinity(0, cpus[:-1])  # the gateway, its replicas and wrk inherit the other CPUs
    env = {"KNFLOW_DATA_DIR": str(workdir / "broker"), "KNFLOW_BROKER_PORT": str(broker_port),
           "KNFLOW_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}  # fmt: skip
    broker = spawn(broker_argv, workdir / "broker.log", env)
    os.environ["KNFLOW_BROKER_PORT"] = str(broker_port)  # where the gateway below publishes
    gateway = None
    try:
        wait_for_port(broker_port, 30, broker, "broker")
        model = build_model(workdir)
        gateway = Knflow(workdir, model, max_replicas="1")
        plain = gateway.deploy()
        logged = gateway.deploy(logger={"mode": "all", "sample_rate": 1.0, "extensions": RUN})
        body = orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64],
                                         "data": np.random.default_rng(0).random(64).round(4).tolist()}]})  # fmt: skip
        until_2xx(gateway.url, body, gateway.began)
        where = f"broker on CPU {cpus[-1]}, gateway + replica + wrk on CPUs {cpus[:-1]}" if pin else "all share"
        print(f"conditions: {len(cpus)} CPUs ({platform.processor() or platform.machine()}), python "
              f"{platform.python_version()}, wrk -t1 -c{args.connections} -d{args.duration}s, body {len(body)} B "
              f"(1x64 FP32 JSON), knflow max_replicas 1, ORT intra-op 1, embedded broker log; {where}; "
              f"logged revision: mode all, sample_rate 1.0 (2 events per request)", flush=True)  # fmt: skip
        measure(gateway, {"off": plain, "on": logged}, body, args, workdir)
    finally:
        if gateway is not None:
            gateway.stop()
        broker.terminate()
        broker.wait(15)
        shutil.rmtree(workdir, ignore_errors=True)


def measure(gateway: Knflow, revisions: dict[str, str], body: bytes, args: argparse.Namespace, workdir: Path) -> None:
    """Alternate off/on rounds on the same gateway; print each round, the medians and their ratios."""
    rps: dict[str, list[float]] = {"off": [], "on": []}
    cpu_us: dict[str, list[float]] = {"off": [], "on": []}
    encode_us: list[float] = []
    published = dropped = 0
    load = Phase("json", body, (args.connections,))
    for revision in revisions.values():  # warm both revisions' replicas first
        set_traffic(gateway, revision)
        wrk(gateway.url, load, args.connections, 2, workdir)
    for round_ in range(args.rounds):
        for phase, revision in revisions.items():
            set_traffic(gateway, revision)
            before, cpu = counters(gateway.base), cpu_seconds(gateway.proc.pid)
            result = wrk(gateway.url, load, args.connections, args.duration, workdir)
            time.sleep(1.0)  # let the publisher drain what the round queued (its CPU counts to the round)
            after, cpu = counters(gateway.base), cpu_seconds(gateway.proc.pid) - cpu
            rps[phase].append(result["rps"])
            cpu_us[phase].append(cpu / (result["rps"] * args.duration) * 1e6)
            sent, lost = after[0] - before[0], after[1] - before[1]
            if phase == "on":
                encode_us.append((after[2] - before[2]) / (result["rps"] * args.duration) * 1e6)
            published, dropped = published + sent, dropped + lost
            print(f"  round {round_ + 1} logging {phase:<3} {result['rps']:>8.0f} req/s  p50 {result['p50']:6.2f} ms"
                  f"  p99 {result['p99']:6.2f} ms  gateway CPU {cpu_us[phase][-1]:6.1f} us/request"
                  f"  non-2xx {result['non2xx']}  events published {sent}, dropped {lost}", flush=True)  # fmt: skip
    pairs = [on / off for off, on in zip(rps["off"], rps["on"], strict=True)]  # adjacent rounds: like conditions
    cpu_pairs = [on / off for off, on in zip(cpu_us["off"], cpu_us["on"], strict=True)]
    off, on = statistics.median(rps["off"]), statistics.median(rps["on"])
    cpu_off, cpu_on = statistics.median(cpu_us["off"]), statistics.median(cpu_us["on"])
    requests = sum(rps["on"]) * args.duration
    print(f"\nmedian requests/s: logging off {off:.0f}, logging on {on:.0f}; on/off = {on / off:.3f} "
          f"(throughput cost {100 * (1 - on / off):.1f} %); median of the rounds' on/off "
          f"{statistics.median(pairs):.3f}")  # fmt: skip
    print(f"median gateway CPU per request: off {cpu_off:.1f} us, on {cpu_on:.1f} us; on/off = {cpu_on / cpu_off:.3f} "
          f"(+{cpu_on - cpu_off:.1f} us per logged request); median of the rounds' on/off "
          f"{statistics.median(cpu_pairs):.3f}")  # fmt: skip
    print(f"of which the publisher's stamping and encoding (measured in the gateway, thread CPU time): median "
          f"{statistics.median(encode_us):.1f} us per logged request")  # fmt: skip
    print(f"logged rounds: ~{requests:.0f} requests, {published} events published to the broker, {dropped} dropped "
          f"({100 * dropped / max(published + dropped, 1):.1f} %)")  # fmt: skip


if __name__ == "__main__":
    main()
