"""What counting one request costs on a server's hot path: knflow's ``infra.metrics`` counts (plain dicts, turned into
prometheus_client families at scrape time) against prometheus_client's own Counter and Histogram, with the labelled
child looked up per request (``labels(...)``, what a server does for a label value it learns from the request) and
looked up once.

    python bench/metrics_cost.py [--requests 200000] [--repeat 7]

Printed: nanoseconds per request (the best of ``--repeat`` runs) for one counter increment plus one histogram
observation labelled by revision, as the gateway counts each inference.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from prometheus_client import CollectorRegistry, Counter, Histogram

from infra.metrics import BUCKETS
from serving.metrics import Metrics

REVISION = "digits-00001"


def candidates() -> dict[str, object]:
    ours = Metrics()
    registry = CollectorRegistry()
    requests = Counter("knflow_requests", "requests", ["revision", "code"], registry=registry)
    latency = Histogram("knflow_request_duration_seconds", "latency", ["revision"], registry=registry, buckets=BUCKETS)
    count, observe = requests.labels(REVISION, "200"), latency.labels(REVISION)

    def per_request_lookup() -> None:
        requests.labels(REVISION, "200").inc()
        latency.labels(REVISION).observe(0.004)

    def children_held() -> None:
        count.inc()
        observe.observe(0.004)

    return {
        "knflow infra.metrics (serving.metrics.Metrics.observe)": lambda: ours.observe(REVISION, 200, 0.004),
        "prometheus_client, labels() per request": per_request_lookup,
        "prometheus_client, children held": children_held,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(
        f"conditions: {os.cpu_count()} CPUs ({platform.machine()}), python {platform.python_version()}, load average "
        f"{os.getloadavg()[0]:.1f}; {args.requests} requests, best of {args.repeat}"
    )
    for name, fn in candidates().items():
        best = min(timeit.repeat(fn, number=args.requests, repeat=args.repeat)) / args.requests  # type: ignore[arg-type]
        print(f"  {name:<58} {best * 1e9:7.0f} ns per request")


if __name__ == "__main__":
    main()
