"""Benchmark: knflow's function host against Knative's Python runtime (func-python) on the same echo function.

Both serve ``functions/examples/knative_echo.py`` (Knative's ``new()`` shape, unchanged); knflow also
serves its native echo, and ``bench/functions/bare.py`` (uvloop and llhttp with a fixed reply: the floor under any
Python server here) runs beside them. One load generator (wrk, 1 thread, 16 connections, binary-mode CloudEvent
POST) drives each in turn in the same run. Then: cold start (spawn -> first reply) of a runner
worker forked from the template, of a fresh ``python -m functions.runtime.host`` and of func-python, and
each one's idle memory. Usage: ``python bench/functions/run.py [--duration 10]``.

``--only cold`` measures just the fresh-process cold starts, ``--cold-rounds`` times each, interleaved (func-python
and knflow's host in turn in every round); ``--before DIR`` adds the host of another checkout (``git worktree add DIR
<rev>``) to the throughput rounds and to those cold starts, run by this interpreter, so a change is compared with what
it replaces in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from eventing.bindings import to_http_binary  # noqa: E402
from eventing.events import new_event  # noqa: E402
from infra.localservices import free_port  # noqa: E402
from infra.peers import PEERS, peer_python  # noqa: E402

SCRATCH = tempfile.TemporaryDirectory(prefix="knflow-bench-")  # the servers' data directories, removed at exit
# Server on one core, load generator on another, the same for every server (when there are two cores).
_PIN = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2 and "--no-pin" not in sys.argv
SERVER_CPU = ["taskset", "-c", "0"] if _PIN else []
LOAD_CPU = ["taskset", "-c", "1"] if _PIN else []
FUNC_PYTHON_LAUNCH = (
    "import sys; sys.path.insert(0, {dir!r}); from knative_echo import new; "
    "from func_python.cloudevent import serve; serve(new)"
)


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, stdout=subprocess.DEVNULL)
        found = shutil.which("wrk")
    assert found, "wrk is not installed"
    return found


def servers() -> dict[str, tuple[list[str], dict[str, str]]]:
    """Each server under test: argv and environment (its own free port in LISTEN_ADDRESS)."""
    base = {**os.environ, "PYTHONPATH": str(ROOT), "KNFLOW_LOG_LEVEL": "WARNING"}
    base["KNFLOW_DATA_DIR"] = tempfile.mkdtemp(dir=SCRATCH.name)
    examples = ROOT / "functions" / "examples"
    fp = [str(peer_python("func-python")), "-c", FUNC_PYTHON_LAUNCH.format(dir=str(examples))]
    argvs = {
        "func-python 0.8.1 (knative_echo)": fp,
        "knflow host (knative_echo)": [
            sys.executable,
            "-m",
            "functions.runtime.host",
            "functions.examples.knative_echo",
        ],
        "knflow host (native echo)": [sys.executable, "-m", "functions.runtime.host", "echo"],
        "bare uvloop + llhttp (no event)": [sys.executable, str(HERE / "bare.py")],
    }
    return {name: (argv, {**base, "LISTEN_ADDRESS": f"127.0.0.1:{free_port()}"}) for name, argv in argvs.items()}


def measured_servers(before: Path | None) -> dict[str, tuple[list[str], dict[str, str], Path]]:
    """The servers measured: argv, environment (its own free port) and working directory; with ``before``, that
    checkout's hosts too, run by this interpreter."""
    chosen = {name: (argv, env, ROOT) for name, (argv, env) in servers().items()}
    if before is not None:
        for name in ("knflow host (knative_echo)", "knflow host (native echo)"):
            argv, env, _ = chosen[name]
            env = {**env, "PYTHONPATH": str(before), "LISTEN_ADDRESS": f"127.0.0.1:{free_port()}"}
            chosen[name.replace("host", "host BEFORE")] = (argv, env, before)
    return chosen


def cpu_s(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far (clock ticks: 10 ms steps)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_fresh_cold(rounds: int, before: Path | None) -> dict[str, list[tuple[float, float]]]:
    """Spawn -> first 200 of a fresh process per server, ``rounds`` times, the servers in turn in each round: wall
    seconds and the CPU seconds the process used until then (less disturbed by a busy machine)."""
    chosen = measured_servers(before)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in chosen}
    for _ in range(rounds):
        for name, (argv, env, cwd) in chosen.items():
            port = free_port()
            env = {**env, "LISTEN_ADDRESS": f"127.0.0.1:{port}"}
            started = time.monotonic()
            process = subprocess.Popen(  # taskset execs the server: the pid is the server's
                [*SERVER_CPU, *argv], env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                first_reply(f"http://127.0.0.1:{port}/", started + 30)
                times[name].append((time.monotonic() - started, cpu_s(process.pid)))
            finally:
                process.terminate()
                process.wait(10)
    return times


def print_fresh_cold(times: dict[str, list[tuple[float, float]]]) -> None:
    peer = times["func-python 0.8.1 (knative_echo)"]
    peer_wall, peer_cpu = (statistics.median(t[i] for t in peer) for i in (0, 1))
    for name, values in times.items():
        wall = sorted(t[0] for t in values)
        cpu = statistics.median(t[1] for t in values)
        median = statistics.median(wall)
        print(
            f"{name:36} wall median {median * 1000:6.1f} ms  p90 {wall[int(len(wall) * 0.9) - 1] * 1000:6.1f}  "
            f"min {wall[0] * 1000:6.1f} ({median / peer_wall:.2f}x func-python); "
            f"CPU median {cpu * 1000:5.0f} ms ({cpu / peer_cpu:.2f}x)"
        )


def post_once(url: str) -> int:
    headers, body = to_http_binary(new_event("dev.knflow.bench.ping", "/bench", {"n": 1}))
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
        return response.status


def first_reply(url: str, deadline: float) -> None:
    while True:
        try:
            post_once(url)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.002)


def rss_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in KiB of one process."""
    rss = int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))
    pss_match = re.search(r"Pss:\s+(\d+)", Path(f"/proc/{pid}/smaps_rollup").read_text())
    return rss, int(pss_match.group(1)) if pss_match else rss


def wrk_run(wrk: str, url: str, duration: int) -> dict[str, float]:
    args = [wrk, "-t1", "-c16", f"-d{duration}s", "--latency", "-s", str(HERE / "event.lua"), url]
    subprocess.run([*LOAD_CPU, *args[:3], "-d1s", *args[4:]], check=True, capture_output=True)  # warm-up
    out = subprocess.run([*LOAD_CPU, *args], check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50": _ms(re.search(r"\s50%\s+([\d.]+\w+)", out).group(1)),
        "p99": _ms(re.search(r"\s99%\s+([\d.]+\w+)", out).group(1)),
        "errors": int(errors.group(1)) if errors else 0,
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def bench_throughput(wrk: str, duration: int, rounds: int, before: Path | None) -> dict[str, dict]:
    """Start every server (with ``before``, that checkout's hosts too), then load them in turn, ``rounds`` times
    interleaved (the machine is shared)."""
    processes, urls, results = {}, {}, {}
    try:
        for name, (argv, env, cwd) in measured_servers(before).items():
            port = int(env["LISTEN_ADDRESS"].rsplit(":", 1)[1])
            started = time.monotonic()
            argv = [*SERVER_CPU, *argv]
            processes[name] = subprocess.Popen(
                argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            urls[name] = f"http://127.0.0.1:{port}/"
            first_reply(urls[name], time.monotonic() + 30)
            results[name] = {"cold_s": time.monotonic() - started, "runs": []}
        time.sleep(0.5)
        for name, process in processes.items():
            results[name]["rss_kib"], results[name]["pss_kib"] = rss_kib(process.pid)
        for _ in range(rounds):
            for name, url in urls.items():
                results[name]["runs"].append(wrk_run(wrk, url, duration))
    finally:
        for process in processes.values():
            process.terminate()
            process.wait(10)
    for result in results.values():
        for key in ("rps", "p50", "p99"):
            result[key] = statistics.median(run[key] for run in result["runs"])
        result["errors"] = sum(run["errors"] for run in result["runs"])
    return results


async def bench_runner_cold_start(rounds: int) -> dict[str, float]:
    """Spawn -> first reply of a runner worker forked from the template (the worker stopped before each)."""
    import aiohttp

    from functions.runtime.runner import Runner
    from infra.settings import load_settings

    settings = load_settings({"KNFLOW_DATA_DIR": tempfile.mkdtemp(dir=SCRATCH.name), "KNFLOW_LOG_LEVEL": "WARNING"})
    runner = Runner(settings)
    await runner.start(0)
    headers, body = to_http_binary(new_event("dev.knflow.bench.ping", "/bench", {"n": 1}))
    times = []
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(rounds):
                await runner.workers["echo"].stop()
                started = time.perf_counter()
                async with http.post(runner.url("echo"), data=body, headers=headers) as response:
                    await response.read()
                    assert response.status == 200, response.status
                times.append(time.perf_counter() - started)
            await asyncio.sleep(0.5)
            idle = rss_kib(runner.workers["echo"].pid)
    finally:
        await runner.stop()
    times.sort()
    return {
        "median_ms": statistics.median(times) * 1000,
        "p90_ms": times[int(len(times) * 0.9) - 1] * 1000,
        "max_ms": times[-1] * 1000,
        "rss_kib": idle[0],
        "pss_kib": idle[1],
    }


def conditions(duration: int, rounds: int) -> str:
    import aiohttp

    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    return (
        f"cpu cores: {os.cpu_count()} ({platform.processor() or platform.machine()}), load avg {os.getloadavg()}\n"
        f"python {platform.python_version()}, aiohttp {aiohttp.__version__}, {PEERS['func-python'][0]} "
        f"(hypercorn), {wrk_version}\n"
        f"load: wrk -t1 -c16 -d{duration}s, binary-mode CloudEvent POST ({HERE / 'event.lua'}), after a 1 s warm-up;\n"
        f"servers loaded in turn, {rounds} interleaved rounds, median of the rounds reported; "
        f"server pinned to cpu 0 and wrk to cpu 1: {_PIN}; "
        f"spawn->reply = fresh process start to first 200"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=3, help="seconds of load per server and round")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved load rounds per server (median reported)")
    parser.add_argument("--cold-rounds", type=int, default=20)
    parser.add_argument("--no-pin", action="store_true", help="let the scheduler place server and wrk")
    parser.add_argument("--only", choices=("cold",), help="cold: only the fresh-process cold starts")
    parser.add_argument("--before", type=Path, help="another checkout whose host is measured beside this one's")
    args = parser.parse_args()
    if args.only == "cold":
        times = bench_fresh_cold(args.cold_rounds, args.before)
        print("== conditions ==")
        print(f"cpu cores: {os.cpu_count()}, load avg {os.getloadavg()}, python {platform.python_version()}")
        print(f"server pinned to cpu 0: {_PIN}; {args.cold_rounds} interleaved rounds; before: {args.before}")
        print("== cold start: fresh process spawn -> first 200 to a binary-mode CloudEvent POST ==")
        print_fresh_cold(times)
        return 0
    wrk = ensure_wrk()
    results = bench_throughput(wrk, args.duration, args.rounds, args.before)
    cold = asyncio.run(bench_runner_cold_start(args.cold_rounds))
    print("== conditions ==")
    print(conditions(args.duration, args.rounds))
    print("== throughput (same echo function, same load) ==")
    print(
        f"{'server':36} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
        f"{'spawn->reply':>12} {'RSS MiB':>8} {'PSS MiB':>8}"
    )
    for name, r in results.items():
        print(
            f"{name:36} {r['rps']:9.0f} {r['p50']:8.2f} {r['p99']:8.2f} {r['errors']:6d} "
            f"{r['cold_s'] * 1000:10.0f}ms {r['rss_kib'] / 1024:8.1f} {r['pss_kib'] / 1024:8.1f}"
        )
        rounds = ", ".join(f"{run['rps']:.0f}" for run in r["runs"])
        print(f"    per round req/s: {rounds}")
    peer = results["func-python 0.8.1 (knative_echo)"]
    for name in (name for name in results if name.startswith("knflow host")):
        mine = results[name]
        paired = statistics.median(m["rps"] / p["rps"] for m, p in zip(mine["runs"], peer["runs"], strict=True))
        print(
            f"ratio {name} / func-python: {mine['rps'] / peer['rps']:.2f}x req/s (medians), "
            f"{paired:.2f}x (median of per-round ratios); p99 {mine['p99']:.2f} ms vs {peer['p99']:.2f} ms"
        )
    per_request = ", ".join(f"{name} {1e6 / result['rps']:.0f} us" for name, result in results.items())
    print(f"time per request (1 / req/s; the bare server's may be wrk's limit): {per_request}")
    print(f"== cold start: runner worker forked from the template, {args.cold_rounds} rounds ==")
    print(
        f"spawn -> first reply: median {cold['median_ms']:.1f} ms, p90 {cold['p90_ms']:.1f} ms, "
        f"max {cold['max_ms']:.1f} ms; idle worker RSS {cold['rss_kib'] / 1024:.1f} MiB "
        f"(PSS {cold['pss_kib'] / 1024:.1f} MiB, pages shared with the template counted once)"
    )
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
