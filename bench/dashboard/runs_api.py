"""How long the dashboard's runs page takes over a large broker history: first load, then refreshes.

Conditions are printed with the figures. No peer: Kubeflow's central dashboard reads Kubernetes
objects, not an event log, so nothing like-for-like runs beside it here.

    PYTHONPATH=. python bench/dashboard/runs_api.py [--runs 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time
from pathlib import Path

import aiohttp
from cloudevents.core.v1.event import CloudEvent

from bench.dashboard.lifecycle_events import start_of_run, tiny_onnx, tuned_run
from eventing.broker import BrokerServer
from infra.auth import local_admin_headers
from infra.localservices import free_port
from infra.settings import load_settings
from infra.store import open_store
from knflow.dashboard import Dashboard
from serving.registry import ModelRegistry


def history(settings, n_runs: int) -> list[CloudEvent]:  # type: ignore[no-untyped-def]
    """Half the runs whole (10 events, tuned and deployed), half just started (3 events, running)."""
    card = ModelRegistry(open_store(settings.artifacts)).register("digits", tiny_onnx())
    events: list[CloudEvent] = []
    for i in range(n_runs):
        events += tuned_run(f"run-{i:08d}", card, "http://x") if i % 2 else start_of_run("d", "train")
    return events


async def timed_get(http: aiohttp.ClientSession, url: str) -> tuple[float, bytes]:
    began = time.perf_counter()
    async with http.get(url) as response:
        body = await response.read()
    return time.perf_counter() - began, body


async def main(n_runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(env={"KNFLOW_DATA_DIR": tmp, "KNFLOW_BROKER": f"embedded://{Path(tmp) / 'ev'}"})
        events = history(settings, n_runs)
        async with BrokerServer(settings, sources=[], port=0) as broker:
            for start in range(0, len(events), 1000):
                await broker.log.append(events[start : start + 1000])
            gateway = f"http://127.0.0.1:{free_port()}"
            dash = Dashboard(settings, broker_url=broker.url, gateway_url=gateway, port=0)
            async with dash, aiohttp.ClientSession(headers=local_admin_headers(settings)) as http:
                first, _ = await timed_get(http, f"{dash.url}/api/runs")
                await broker.log.append(start_of_run("d", "train"))
                times = sorted([(await timed_get(http, f"{dash.url}/api/runs"))[0] for _ in range(21)])
    print(
        f"conditions: {len(events)} events in {n_runs} runs ({n_runs // 2} running), embedded broker, "
        f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}"
    )
    print(f"GET /api/runs first load (reads the whole history): {first * 1000:.0f} ms")
    print(
        f"GET /api/runs refresh (one with 3 new events, 20 with none): "
        f"median {times[10] * 1000:.1f} ms, max {times[-1] * 1000:.1f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2000)
    asyncio.run(main(parser.parse_args().runs))
