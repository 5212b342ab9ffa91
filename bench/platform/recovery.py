"""How long a component of ``knflow up`` is gone after a crash: SIGKILL to running again.

Runs ``knflow up`` (the embedded platform, its real processes) on free ports in a temporary data directory, then
for each component (broker, functions runner, gateway, knflow server) ``--kills`` times: SIGKILL its process and
time until (a) ``/api/health`` of the knflow server lists it ``running`` with a new pid — the supervisor noticed
the exit, waited its backoff, started it and saw its health check answer. The first backoff is set to
``--backoff`` seconds, doubled for each kill of the same component (so the figure is mostly the component's own
start; with the default 1 s, 2 s, 4 s … a user waits that much longer), and the restart limit is high enough for
every kill. For comparison it prints how long ``knflow up`` took to bring the whole platform up.

    .venv/bin/python bench/platform/recovery.py [--kills 3] [--backoff 0.1]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import urllib3  # noqa: E402

from infra.localservices import free_platform_ports  # noqa: E402

COMPONENTS = ("broker", "functions", "gateway", "dashboard")
http = urllib3.PoolManager(retries=False, timeout=2.0)


def health(url: str) -> dict[str, dict] | None:
    try:
        answer = http.request("GET", f"{url}/api/health")
    except urllib3.exceptions.HTTPError:
        return None
    if answer.status != 200:
        return None
    return {c["name"]: c for c in answer.json()["components"]}


def wait_for(check, timeout: float = 120.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.01)
    raise SystemExit("timed out")


def all_running(url: str) -> dict[str, dict] | None:
    found = health(url)
    return found if found and len(found) == 4 and all(c["state"] == "running" for c in found.values()) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--backoff", type=float, default=0.1)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="knflow-recovery-"))
    ports = free_platform_ports()
    env = {
        **os.environ, **ports, "KNFLOW_DATA_DIR": str(data), "KNFLOW_LOG_FORMAT": "text", "PYTHONPATH": str(ROOT),
        "KNFLOW_PLATFORM_RESTART_BACKOFF_S": str(args.backoff), "KNFLOW_PLATFORM_RESTART_LIMIT": str(args.kills + 1),
    }  # fmt: skip
    url = f"http://127.0.0.1:{ports['KNFLOW_DASHBOARD_PORT']}"
    print(f"knflow up recovery: {platform.platform()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    print(f"embedded broker, file store; restart backoff {args.backoff}s; {args.kills} SIGKILLs per component")
    with (data / "up.out").open("w") as out:
        t0 = time.monotonic()
        up = subprocess.Popen([sys.executable, "-m", "knflow", "up"], env=env, cwd=data, stdout=out,
                              stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        try:
            wait_for(lambda: all_running(url))
            print(f"knflow up: every component running {time.monotonic() - t0:.2f}s after the command started")
            for name in COMPONENTS:
                times = []
                for _ in range(args.kills):
                    old = all_running(url) or wait_for(lambda: all_running(url))
                    started = time.monotonic()
                    os.kill(old[name]["pid"], signal.SIGKILL)
                    wait_for(lambda: (c := all_running(url)) and c[name]["pid"] != old[name]["pid"])  # noqa: B023
                    times.append(time.monotonic() - started)
                print(
                    f"{name:<10} SIGKILL -> running again: median {statistics.median(times):.2f}s, "
                    f"min {min(times):.2f}s, max {max(times):.2f}s ({len(times)} kills)"
                )
        finally:
            os.killpg(up.pid, signal.SIGTERM)
            up.wait(60)
            shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
