"""knflow against Seldon MLServer on the 16-connection JSON load, in interleaved rounds: both servers up at once, each
round loads one then the other, so a burst of load from elsewhere on a shared machine hits both alike. Printed: every
round's requests/s and p99 of each, and the median of the per-round ratios (the figure to quote; run.py's single
pass per server is at the mercy of what else runs meanwhile).

    .venv/bin/python bench/serving/ratio.py [--rounds 5] [--duration 8] [--connections 16]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.serving.run import Phase, build_model, phases, post, until_2xx, wrk
from bench.serving.servers import Knflow, start_mlserver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="knflow-ratio-"))
    model = build_model(workdir)
    json_phase: Phase = phases([args.connections])[0]
    knflow = Knflow(workdir, model, max_replicas="1")
    mlserver = None
    try:
        knflow.deploy()
        until_2xx(knflow.url, json_phase.body, knflow.began)
        mlserver = start_mlserver(workdir, model)
        until_2xx(mlserver.url, json_phase.body, mlserver.began)
        servers = {"knflow": knflow, "mlserver": mlserver}
        for server in servers.values():  # warm both
            for _ in range(100):
                post(server.url, json_phase.body)
        print(f"conditions: {os.cpu_count()} CPUs, python {platform.python_version()}, load average "
              f"{os.getloadavg()[0]:.1f}; wrk -t1 -c{args.connections} -d{args.duration}s, JSON 1x64 FP32 "
              f"({len(json_phase.body)} B), ORT intra-op 1, knflow max_replicas 1, both servers up throughout, "
              f"{args.rounds} rounds, order alternating")  # fmt: skip
        ratios = []
        for round_ in range(args.rounds):
            order = list(servers) if round_ % 2 == 0 else list(reversed(servers))
            got = {name: wrk(servers[name].url, json_phase, args.connections, args.duration, workdir) for name in order}
            ratio = got["knflow"]["rps"] / got["mlserver"]["rps"]
            ratios.append(ratio)
            print(f"  round {round_ + 1}: knflow {got['knflow']['rps']:7.0f} req/s p99 {got['knflow']['p99']:6.2f} ms"
                  f"   mlserver {got['mlserver']['rps']:6.0f} req/s p99 {got['mlserver']['p99']:6.2f} ms"
                  f"   ratio {ratio:5.2f}   load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
        print(f"knflow/mlserver at c={args.connections}: median of the rounds' ratios {statistics.median(ratios):.2f}x "
              f"(min {min(ratios):.2f}, max {max(ratios):.2f})")  # fmt: skip
    finally:
        knflow.stop()
        if mlserver is not None:
            mlserver.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
