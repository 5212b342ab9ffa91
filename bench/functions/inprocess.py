"""The function host's own work per event, without sockets: microseconds from a request's bytes to its reply's bytes.

A fresh process per sample starts a ``FunctionHost`` and feeds 16 connections of its lean HTTP/1.1 path (the
protocol ``python -m functions.runtime.host`` serves; wrk's 16 in ``run.py``) the binary-mode CloudEvent POST of
``event.lua``, one request at a time on each, through transports that keep what is written. No kernel, no load
generator and no second core take a share, so a change to the host's path shows here long before it shows above
``run.py``'s round-to-round spread; ``run.py`` stays the measure against func-python. ``--before DIR`` runs another
checkout's host (``git worktree add DIR <rev>``) in the same rounds.
Usage: ``python bench/functions/inprocess.py [--events 20000] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TARGETS = {"knative_echo": "functions.examples.knative_echo", "native echo": "echo"}
BODY = b'{"n":1,"text":"hello knflow"}'
REQUEST = (
    b"POST / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\ncontent-type: application/json\r\nce-specversion: 1.0\r\n"
    b"ce-id: bench-1\r\nce-source: /bench/wrk\r\nce-type: dev.knflow.bench.ping\r\nce-runid: run-bench\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
)


class Kept(asyncio.Transport):
    """A connection's transport that keeps the last reply and wakes the feeder when one is written."""

    def __init__(self) -> None:
        super().__init__()
        self.last = b""
        self.written: asyncio.Future[None] | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.last = bytes(data)
        if self.written is not None:
            self.written.set_result(None)
            self.written = None

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False


async def per_event_us(target: str, events: int, connections: int = 16) -> float:
    """Microseconds per event over ``events`` requests, ``connections`` at a time as wrk sends them (after as many
    to warm up)."""
    from eventing.ingress import IngressProtocol
    from functions.runtime.host import FunctionHost
    from functions.runtime.loader import load_function
    from infra.settings import load_settings

    scratch = tempfile.TemporaryDirectory(prefix="knflow-bench-")
    settings = load_settings({"KNFLOW_DATA_DIR": scratch.name, "KNFLOW_LOG_LEVEL": "ERROR"})
    host = FunctionHost(load_function(target, None), settings, environ={})
    await host.start(["127.0.0.1:0"], 1.0)
    try:
        opened = []
        for _ in range(connections):
            protocol = IngressProtocol(host._lean)  # type: ignore[arg-type]  # started above: the host's lean server
            transport = Kept()
            protocol.connection_made(transport)
            opened.append((protocol, transport))
        loop = asyncio.get_running_loop()
        for _warm_then_timed in range(2):
            started = time.perf_counter()
            for _ in range(events // connections):
                for protocol, transport in opened:
                    transport.written = loop.create_future()
                    protocol.data_received(REQUEST)
                for _protocol, transport in opened:
                    if transport.written is not None:
                        await transport.written
            elapsed = time.perf_counter() - started
        assert all(transport.last.startswith(b"HTTP/1.1 200 ") for _, transport in opened), opened[0][1].last[:80]
        return elapsed / (events // connections * connections) * 1e6
    finally:
        await host.stop()
        scratch.cleanup()


def sample(tree: Path, target: str, events: int) -> float:
    """One fresh process of ``tree``'s host, pinned to cpu 0 where there is taskset: its microseconds per event."""
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    env = {**os.environ, "PYTHONPATH": str(tree)}
    argv = [*pin, sys.executable, str(HERE / "inprocess.py"), "--child", target, "--events", str(events)]
    out = subprocess.run(argv, env=env, cwd=tree, check=True, capture_output=True, text=True).stdout
    return float(out.split()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000, help="events per sample (after as many to warm up)")
    parser.add_argument("--rounds", type=int, default=5, help="fresh processes per host and function, interleaved")
    parser.add_argument("--before", type=Path, help="another checkout whose host is measured in the same rounds")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import uvloop

        print(uvloop.run(per_event_us(args.child, args.events)))
        return 0
    trees = {"": ROOT} | ({" BEFORE": args.before.resolve()} if args.before else {})
    samples: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for suffix, tree in trees.items():
            for name, target in TARGETS.items():
                samples.setdefault(f"host{suffix} ({name})", []).append(sample(tree, target, args.events))
    print("== conditions ==")
    print(f"cpu cores: {os.cpu_count()}, load avg {os.getloadavg()}, python {platform.python_version()}")
    print(f"{args.rounds} interleaved rounds, a fresh process each, {args.events} events each; before: {args.before}")
    print("== the host's own work per event (no sockets): microseconds ==")
    for name, values in samples.items():
        values.sort()
        print(f"{name:32} median {statistics.median(values):6.1f}  min {values[0]:6.1f}  max {values[-1]:6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
