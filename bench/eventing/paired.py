"""Tracing's cost with the host's noise cancelled: an untraced and a traced broker side by side, saturated at the same
time by one load generator, so that both see the same load from the rest of the machine.

Run: ``python -m bench.eventing --backends embedded --tracing --paired N`` (N rounds). Each round starts both
brokers (embedded log) and warms each up with 600 events (a full batch: the traced broker's span exporter process
starts and exports once before the measure; it starts once per process, not per event), then runs the saturation
phase on both at once (``--clients`` each). A broker's throughput counts the events its subscriber received from
the phase's start until the first of the two finished (the other would otherwise have the machine to itself at the
end); under the kernel's fair share, the traced/untraced ratio is then the tracing's whole cost: the broker's own
CPU per event and its span exporter process's CPU together. With ``--before PATH`` the pair is that checkout's.

Before saturating, each round offers both brokers ``--paired-rate`` events a second (300) for ``--seconds`` at once
and prints their CPU per event: at a rate both carry, the traced broker's extra CPU is the tracing's alone (a
saturated broker that runs slower also batches less, which costs it CPU per event of its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from pathlib import Path

from bench.eventing.run import (
    DiscardingReceiver,
    Sink,
    broker_with_sink,
    fixed_rate,
    saturation,
    traced_env,
)
from infra.http1 import Http1Pool

VARIANTS = ("embedded", "embedded-traced")
CpuCost = tuple[float, float]  # the traced broker's extra CPU per event over the untraced one's, its exporter's (s)


def received_between(sink: Sink, start: float, end: float) -> int:
    return sum(1 for at in sink.arrived.values() if start <= at <= end)


async def exported(receiver: DiscardingReceiver, timeout: float = 60.0) -> None:
    """Until the receiver has had a first export (the traced broker's span exporter process is running)."""
    deadline = time.monotonic() + timeout
    while not receiver.requests and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


def run_seconds(pid: int) -> float:
    """The CPU seconds a process's threads have run so far, to the nanosecond (the scheduler's own account:
    ``/proc/PID/stat`` counts in 10 ms ticks, too coarse for a few microseconds per event over a few thousand)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def children_run_seconds(pid: int) -> float:
    """``run_seconds`` of a process's running children (a traced broker's span exporter)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            for child in task.read_text().split():
                with contextlib.suppress(OSError):
                    total += run_seconds(int(child))
    return total


def cpu_now(brokers: dict) -> dict[str, tuple[float, float]]:
    """Each broker's CPU seconds so far, and its span exporter's."""
    return {tag: (run_seconds(p.pid), children_run_seconds(p.pid)) for tag, (p, _, _) in brokers.items()}


async def fixed_rate_cost(args, brokers: dict, sessions: dict) -> CpuCost:
    """Both brokers offered ``args.paired_rate`` events a second for ``args.seconds`` at once; prints and returns the
    traced broker's extra CPU per event and its exporter's."""
    os.sync()
    before = cpu_now(brokers)
    phases = await asyncio.gather(
        *(
            fixed_rate(sessions[tag], url, sink, args.paired_rate, args.seconds, tag)
            for tag, (_, url, sink) in brokers.items()
        )
    )
    await asyncio.sleep(1)  # the batch the phase's last events filled is exported now, not in the next phase
    after = cpu_now(brokers)
    per_event = {}
    for phase, tag in zip(phases, brokers, strict=True):
        n = max(phase.delivered, 1)
        per_event[tag] = ((after[tag][0] - before[tag][0]) / n, (after[tag][1] - before[tag][1]) / n)
        print(
            f"  {tag:<16} @ {args.paired_rate:.0f}/s: {phase.delivered} events delivered, broker "
            f"{per_event[tag][0] * 1e6:.0f} us CPU/event, its span exporter {per_event[tag][1] * 1e6:.0f} us",
            flush=True,
        )
    extra = per_event[VARIANTS[1]][0] - per_event[VARIANTS[0]][0]
    print(f"# paired @ {args.paired_rate:.0f}/s: traced broker {extra * 1e6:+.0f} us CPU/event, exporter "
          f"{per_event[VARIANTS[1]][1] * 1e6:.0f} us", flush=True)  # fmt: skip
    return extra, per_event[VARIANTS[1]][1]


async def paired_round(
    args, envs: dict[str, dict[str, str]], tmp: Path, receiver: DiscardingReceiver, code: Path | None
) -> tuple[float, CpuCost | None]:
    """One round (of this checkout's brokers, or of ``code``'s); the traced/untraced throughput ratio. ``envs``'
    order is the order the brokers start and their clients are scheduled in (the first has a small edge)."""
    async with contextlib.AsyncExitStack() as stack:
        brokers = {}
        for tag in envs:
            brokers[tag] = await stack.enter_async_context(broker_with_sink(tag, envs[tag], tmp, code))
        sessions = {tag: Http1Pool() for tag in VARIANTS}
        for tag in VARIANTS:
            stack.push_async_callback(sessions[tag].close)
        for tag, (_, url, sink) in brokers.items():  # 600 events: a full batch starts the span exporter process
            await fixed_rate(sessions[tag], url, sink, 200, 3, f"{tag} warm-up")
        await exported(receiver)  # its start (imports) is once per process, not per event: not in the figures
        cost = await fixed_rate_cost(args, brokers, sessions) if args.paired_rate else None
        os.sync()
        cpu = cpu_now(brokers)
        start = time.perf_counter()
        await asyncio.gather(
            *(
                saturation(sessions[tag], url, sink, args.saturation_events, args.clients, tag)
                for tag, (_, url, sink) in brokers.items()
            )
        )
        end = min(max(sink.arrived.values()) for _, _, sink in brokers.values())  # the first to finish
        rates = {}
        for tag, (proc, _, sink) in brokers.items():
            n = received_between(sink, start, end)
            rates[tag] = n / (end - start)
            own, child = run_seconds(proc.pid) - cpu[tag][0], children_run_seconds(proc.pid) - cpu[tag][1]
            total = args.saturation_events
            print(
                f"  {tag:<16} {rates[tag]:7.0f} ev/s while both ran ({n} events in {end - start:.1f}s); broker "
                f"{own / total * 1e6:.0f} us CPU/event, its span exporter {child / total * 1e6:.0f} us",
                flush=True,
            )
    ratio = rates[VARIANTS[1]] / rates[VARIANTS[0]]
    print(f"# paired saturation: {VARIANTS[1]}/{VARIANTS[0]} throughput ratio {ratio:.3f}", flush=True)
    return ratio, cost


async def paired(args, receiver: DiscardingReceiver, tmp: Path) -> None:
    """``args.paired`` rounds; prints each ratio and their median. With ``--before``, of that checkout's brokers."""
    code = Path(args.before).resolve() if args.before else None
    ratios, costs = [], []
    for n in range(args.paired):
        round_dir = tmp / f"paired-{n}"
        round_dir.mkdir(parents=True)
        base = {"KNFLOW_DATA_DIR": str(round_dir / "data"), "KNFLOW_ARTIFACTS": f"file://{round_dir / 'artifacts'}"}
        order = VARIANTS if n % 2 == 0 else VARIANTS[::-1]  # every other round the traced broker goes first
        envs = {tag: {**base, "KNFLOW_BROKER": f"embedded://{round_dir / tag}"} for tag in order}
        envs[VARIANTS[1]] |= traced_env(receiver)
        print(f"# paired round {n + 1} of {args.paired}: {os.getloadavg()[0]:.1f} load average", flush=True)
        receiver.requests = 0
        ratio, cost = await paired_round(args, envs, round_dir, receiver, code)
        ratios.append(ratio)
        costs += [cost] if cost else []
    ordered = sorted(ratios)
    print(
        f"# paired saturation (traced broker second, first, ...): traced/untraced median ratio of {len(ratios)} rounds"
        f" {statistics.median(ratios):.3f} "
        f"(lowest {ordered[0]:.3f}, highest {ordered[-1]:.3f})"
    )
    if costs:
        broker, exporter = (statistics.median(c[i] for c in costs) * 1e6 for i in (0, 1))
        print(
            f"# paired @ {args.paired_rate:.0f}/s: tracing's CPU per event, median of {len(costs)} rounds: broker "
            f"{broker:+.0f} us, span exporter {exporter:.0f} us, together {broker + exporter:.0f} us"
        )
