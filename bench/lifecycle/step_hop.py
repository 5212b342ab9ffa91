"""What an added pass-through step costs a run, on the embedded platform (its real processes).

Two pipelines on one platform, runs of one event each, one at a time:

* ``bare``: ``bench.start`` → the built-in ``echo`` step → ``dev.knflow.echo.reply``;
* ``with``: ``bench.start`` → a user's pass-through function (``knflow func new``, deployed with ``knflow
  deploy``'s code) → ``bench.passed`` → ``echo`` → ``dev.knflow.echo.reply``;

and ``with-env``, the same with the pass-through deployed with a dependency list of its own (so its worker runs
under its own environment's interpreter instead of being forked from the template). A step's hop is the time
from the broker accepting its input event to the broker accepting its reply: the ``ts`` the embedded log
records when it appends each event (read from its SQLite file). Printed: the p50/p90 of the pass-through hop,
of the built-in echo hop in the same run (the peer: a step knflow ships), and of the whole run with and without
the step; the goal is a pass-through hop p50 of at most 5 ms. Workers are warm (idle grace 600 s).

    .venv/bin/python bench/lifecycle/step_hop.py [--runs 200]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import urllib3  # noqa: E402

from eventing.bindings import to_http_binary  # noqa: E402
from eventing.events import new_event  # noqa: E402
from infra.localservices import free_platform_ports  # noqa: E402
from infra.settings import load_settings  # noqa: E402
from knflow.control import PipelineControl  # noqa: E402
from knflow.deployment import Deployer  # noqa: E402
from knflow.follow import History  # noqa: E402
from knflow.pipeline import Pipeline, on  # noqa: E402
from knflow.platform import Platform  # noqa: E402
from knflow.scaffold import new_function  # noqa: E402

START, PASSED, REPLY = "bench.start", "bench.passed", "dev.knflow.echo.reply"
GOAL_MS = 5.0


def pipelines(functions: dict[str, str]) -> list:
    """The bare pipeline and one with each pass-through function before echo."""
    out = [Pipeline("bare").step("end", "echo", takes=[on(START)]).spec()]
    for name, function in functions.items():
        with_step = Pipeline(name).step("pass", function, takes=[on(START)], emits=PASSED)
        out.append(with_step.step("end", "echo", takes=[on(PASSED)]).spec())
    return out


def deploy_pass_throughs(root: Path, deployer: Deployer, own_env: bool = True) -> dict[str, str]:
    """The pass-through forked from the template, and the same with an environment of its own."""
    directories = {"with": new_function("pass", root / "pass", "knflow")}
    if own_env:
        own = directories["with-env"] = new_function("pass-env", root / "pass-env", "knflow")
        pyproject = own / "pyproject.toml"  # a dependency knflow has: the environment builds offline
        pyproject.write_text(pyproject.read_text().replace("dependencies = []", 'dependencies = ["orjson"]'))
    for directory in directories.values():
        func = directory / "function" / "func.py"
        func.write_text(func.read_text().replace(f"com.example.{directory.name}.done", PASSED))
        func.write_text(func.read_text().replace('    ctx.log.info("', '    # ctx.log.info("'))
    return {pipeline: deployer.deploy(directory).name for pipeline, directory in directories.items()}


def run_once(http: urllib3.PoolManager, broker: str, history: History, pipeline: str) -> str:
    """Send one start event into ``pipeline`` and wait for the echo's reply; the runid."""
    event = new_event(START, "/bench", {"n": 1}, extensions={"pipeline": pipeline})
    headers, body = to_http_binary(event)
    assert http.request("POST", broker + "/", body=body, headers=headers).status == 202
    runid = event.get_extension("runid")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        events, _ = history.page(runid=runid, type=REPLY, wait=5.0)
        if events:
            return runid
    raise TimeoutError(f"no reply in pipeline {pipeline} for run {runid}")


def appended(db: Path, runids: list[str]) -> dict[str, dict[str, float]]:
    """runid -> event type -> when the broker appended it (its log's ts)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    out: dict[str, dict[str, float]] = {r: {} for r in runids}
    for runid, type_, ts in conn.execute(
        "SELECT runid, type, ts FROM events WHERE type IN (?, ?, ?)", (START, PASSED, REPLY)
    ):
        if runid in out:
            out[runid].setdefault(type_, ts)
    conn.close()
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3


def line(label: str, values: list[float]) -> str:
    return (
        f"{label:<44} p50 {statistics.median(values) * 1e3:7.2f} ms   p90 {pct(values, 0.9):7.2f} ms   n={len(values)}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="measured runs per pipeline (default 200)")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured runs first (default 10)")
    parser.add_argument("--no-env", action="store_true", help="skip the variant with an environment of its own")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="knflow-hop-"))
    (base / "knflow.toml").write_text("")
    env = {
        "KNFLOW_DATA_DIR": str(base / "data"),
        "KNFLOW_LOG_LEVEL": "WARNING",
        "KNFLOW_FUNCTIONS_IDLE_GRACE_S": "600",
        **free_platform_ports(),
    }
    os.environ.update(env)  # the platform's children read the same settings
    settings = load_settings(env, config_file=base / "knflow.toml")
    with Platform.start(settings, only=("broker", "functions")) as running:
        control = PipelineControl(settings)
        functions = deploy_pass_throughs(base, control.deployer, own_env=not args.no_env)
        for spec in pipelines(functions):
            control.apply(spec)
        http, history = urllib3.PoolManager(retries=False), running.history()
        runids: dict[str, list[str]] = {}
        for _ in range(args.warmup):
            for name in ("bare", *functions):
                run_once(http, running.url("broker"), history, name)
        for _ in range(args.runs):  # interleaved, so drift in the machine's load hits every pipeline alike
            for name in ("bare", *functions):
                runids.setdefault(name, []).append(run_once(http, running.url("broker"), history, name))
        assert settings.broker.path is not None
        times = {name: appended(settings.broker.path / "events.db", ids) for name, ids in runids.items()}
    shutil.rmtree(base, ignore_errors=True)
    report(args, times)
    return 0


def report(args: argparse.Namespace, times: dict[str, dict[str, dict[str, float]]]) -> None:
    load = os.getloadavg()
    print(f"conditions: embedded broker (SQLite WAL), platform processes on loopback, {os.cpu_count()} CPUs, load "
          f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}, Python {platform.python_version()}, {args.runs} runs per "
          f"pipeline after {args.warmup} warm-up runs, one run at a time, workers warm")  # fmt: skip
    bare = list(times["bare"].values())
    echo_hop = [t[REPLY] - t[START] for t in bare]
    print(line("built-in echo step hop (bare pipeline)", echo_hop))
    print(line("run without the step (start -> echo reply)", echo_hop))
    for name in [n for n in times if n != "bare"]:
        runs = list(times[name].values())
        hop = [t[PASSED] - t[START] for t in runs]
        total = [t[REPLY] - t[START] for t in runs]
        kind = "forked" if name == "with" else "own environment"
        print(line(f"pass-through step hop ({kind})", hop))
        print(line(f"run with the step ({kind})", total))
        added = statistics.median(total) - statistics.median(echo_hop)
        verdict = "meets" if statistics.median(hop) * 1e3 <= GOAL_MS else "misses"
        print(f"  added to a run: {added * 1e3:.2f} ms at p50; hop p50 {verdict} the {GOAL_MS:.0f} ms goal")


if __name__ == "__main__":
    sys.exit(main())
