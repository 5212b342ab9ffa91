"""What reading settings adds to a fresh process's start: ``import infra.settings`` and ``load_settings()``, alone and
after ``import functions.runtime.host`` (a function host's cold start), in CPU time (user + sys, from ``wait4``: less
disturbed by a busy machine than wall time) and wall time; and the CPU time of the first ``load_settings()`` itself
in a process that has imported the host (measured inside it: the host's cold-start share, without the noise of the
host's own imports).

    python bench/settings_cost.py [--runs 15] [--before DIR]

``--before DIR``: another checkout of knflow (``git worktree add DIR <rev>``) measured in the same run, interleaved
with this one, and the difference printed; both run under this interpreter.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
LOAD = "from infra.settings import load_settings; load_settings({'KNFLOW_DATA_DIR': '/tmp/knflow-bench-settings'})"
CASES = {
    "python -c pass": "pass",
    "import infra.settings": "import infra.settings",
    "... + load_settings": LOAD,
    "import functions.runtime.host": "import functions.runtime.host",
    "... + load_settings ": f"import functions.runtime.host; {LOAD}",
}
IN_HOST = f"import time, functions.runtime.host; t = time.process_time(); {LOAD}; print(time.process_time() - t)"


def in_host(tree: Path) -> float:
    """CPU seconds of the first load_settings() in a fresh process that has imported the function host."""
    out = subprocess.run([sys.executable, "-c", IN_HOST], cwd=tree, capture_output=True, text=True, check=True)
    return float(out.stdout)


def once(tree: Path, code: str) -> tuple[float, float]:
    """CPU and wall seconds of one fresh interpreter running ``code`` in ``tree``."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tree)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{tree}: {code!r} exited {proc.returncode}")
    return usage.ru_utime + usage.ru_stime, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--before", type=Path, help="another checkout to compare with, in the same run")
    args = parser.parse_args()
    trees = {"this": HERE} | ({"before": args.before.resolve()} if args.before else {})
    print(
        f"python {platform.python_version()}, pydantic-settings {importlib.metadata.version('pydantic-settings')}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; {args.runs} fresh processes per case and "
        "checkout, interleaved; medians in ms"
    )
    for case, code in CASES.items():
        got: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in trees}
        for _ in range(args.runs):
            for name, tree in trees.items():
                cpu, wall = once(tree, code)
                got[name][0].append(cpu)
                got[name][1].append(wall)
        cells = [
            f"{name}: cpu {statistics.median(cpu) * 1e3:7.1f}  wall {statistics.median(wall) * 1e3:7.1f}"
            for name, (cpu, wall) in got.items()
        ]
        if args.before:
            delta = statistics.median(got["this"][0]) - statistics.median(got["before"][0])
            cells.append(f"cpu this - before {delta * 1e3:+6.1f}")
        print(f"{case:32s} " + "   ".join(cells), flush=True)
    first: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(args.runs):
        for name, tree in trees.items():
            first[name].append(in_host(tree))
    cells = [f"{name}: cpu {statistics.median(v) * 1e3:7.1f}  min {min(v) * 1e3:7.1f}" for name, v in first.items()]
    print(f"{'first load_settings in a host':32s} " + "   ".join(cells), flush=True)


if __name__ == "__main__":
    main()
