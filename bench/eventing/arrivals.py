"""How soon an object another tool puts under ``raw/`` is announced: the S3 polling source against the file-store
watcher (the arrival source knflow already had, which also finds objects by looking).

A real broker (embedded log) runs in this process with the lifecycle's arrival settings; a SeaweedFS S3 server
(``weed mini``) runs beside it. For each source, ``--puts`` objects are put one at a time at a random moment of
the polling period (the plain ``minio`` client for S3, a second ``FileStore`` object for the file store, so the
watcher is not woken by a put listener) and the time from the put returning to the ``data.arrived`` event's
``time`` is taken. Expected: about half the interval plus one listing and HEAD. Also printed: the CPU the broker
process spent per second while polling an idle bucket of ``--objects`` objects.

    .venv/bin/python bench/eventing/arrivals.py [--puts 20] [--objects 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from minio import Minio  # noqa: E402

from eventing.broker import BrokerServer  # noqa: E402
from functions.contract import DATA_ARRIVED, with_lifecycle  # noqa: E402
from infra.auth import local_admin_headers  # noqa: E402
from infra.localservices import start_seaweedfs  # noqa: E402
from infra.settings import load_settings  # noqa: E402
from infra.store_file import FileStore  # noqa: E402


async def announced_at(session: aiohttp.ClientSession, broker: BrokerServer, key: str) -> float:
    """The wall-clock time in the data.arrived event of ``key`` (waiting for it)."""
    while True:
        params = {"type": DATA_ARRIVED, "limit": "1000", "wait": "1"}
        async with session.get(f"{broker.url}/events", params=params) as answer:
            for event in (await answer.json())["events"]:
                if event["data"]["key"] == key:
                    return datetime.fromisoformat(event["time"]).timestamp()


async def measure(settings, put, puts: int, interval: float) -> list[float]:  # type: ignore[no-untyped-def]
    latencies = []
    headers = local_admin_headers(settings)
    async with BrokerServer(settings, port=0) as broker, aiohttp.ClientSession(headers=headers) as session:
        await asyncio.sleep(interval * 2)  # the first listing (the baseline) is done
        for i in range(puts):
            await asyncio.sleep(random.uniform(0, interval))
            key = f"raw/bench/object-{i}.csv"
            await asyncio.to_thread(put, key)
            done = time.time()
            latencies.append(await announced_at(session, broker, key) - done)
    return latencies


async def idle_cpu(settings, seconds: float) -> float:  # type: ignore[no-untyped-def]
    """CPU seconds this process spends per second with the broker polling and nothing arriving."""
    async with BrokerServer(settings, port=0):
        await asyncio.sleep(2)
        before, t0 = time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        return (time.process_time() - before) / (time.monotonic() - t0)


def summary(name: str, latencies: list[float]) -> str:
    ms = sorted(x * 1000 for x in latencies)
    p90 = ms[int(0.9 * (len(ms) - 1))]
    return f"{name:<34} put -> announced: p50 {statistics.median(ms):6.0f} ms  p90 {p90:6.0f} ms  max {ms[-1]:6.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--puts", type=int, default=20)
    parser.add_argument("--objects", type=int, default=1000, help="objects in the bucket for the idle-CPU figure")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="knflow-arrivals-"))
    s3 = start_seaweedfs(work / "seaweedfs")
    try:
        client = Minio(s3.url.split("://", 1)[1], secure=False)
        print(f"arrival latency: {platform.platform()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
        print(f"SeaweedFS S3 at {s3.url}; embedded broker in this process; {args.puts} puts per source")

        def s3_settings(bucket: str, interval: float):  # type: ignore[no-untyped-def]
            client.make_bucket(bucket)
            env = {
                "KNFLOW_DATA_DIR": str(work / bucket), "KNFLOW_ARTIFACTS": f"s3://{bucket}?endpoint={s3.url}",
                "KNFLOW_EVENTING_S3_POLL_INTERVAL_S": str(interval), "KNFLOW_EVENTING_S3_ARRIVALS": "poll",
            }  # fmt: skip
            return with_lifecycle(load_settings(env, config_file=None))

        def s3_put(bucket: str):  # type: ignore[no-untyped-def]
            return lambda key: client.put_object(bucket, key, io.BytesIO(b"a,label\n1,0\n"), 12)

        for interval in (2.0, 0.5):
            bucket = f"bench-{int(interval * 1000)}"
            latencies = asyncio.run(measure(s3_settings(bucket, interval), s3_put(bucket), args.puts, interval))
            print(summary(f"S3 polling, interval {interval}s", latencies))
        files = work / "files"
        env = {"KNFLOW_DATA_DIR": str(work / "filedata"), "KNFLOW_ARTIFACTS": f"file://{files}"}
        file_settings = with_lifecycle(load_settings(env, config_file=None))
        other = FileStore(files)
        latencies = asyncio.run(measure(file_settings, lambda key: other.put(key, b"a,label\n1,0\n"), args.puts, 1.0))
        print(summary("file-store watcher, interval 1.0s", latencies))

        bucket = "bench-idle"
        settings = s3_settings(bucket, 2.0)
        for i in range(args.objects):
            client.put_object(bucket, f"raw/idle/o-{i}.csv", io.BytesIO(b"x"), 1)
        print(f"S3 polling every 2.0s, {args.objects} objects under raw/, nothing new: broker process CPU "
              f"{asyncio.run(idle_cpu(settings, 20)) * 100:.1f}% of one core")  # fmt: skip
    finally:
        s3.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
