"""The fast CloudEvents codec alone (``eventing/wire.py``): reading an event into ``bindings.ReadEvent`` (the SDK's
public ``BaseCloudEvent`` contract, no second validation) against the same reads building the SDK's ``CloudEvent``
with its constructor, and against the strict reference (``eventing/bindings.py``), in one process, interleaved.

Run: ``python -m bench.eventing.codec [--rounds 5] [--number 20000]``; figures in ``bench/eventing/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import timeit
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

from cloudevents.core.v1.event import CloudEvent

from eventing import bindings, wire
from eventing.events import new_event


def reads() -> dict[str, tuple[Callable[[], Any], Callable[[], Any]]]:
    """Each read on the fast path and on the reference, for one event of the broker's usual shape."""
    event = new_event("dev.knflow.bench", "/bench", {"n": 1, "rows": [1, 2, 3]}, runid="run-bench")
    headers, body = wire.to_http_binary(event)
    key, kafka_headers, value = wire.to_kafka(event)
    structured = bindings.to_json(event)
    return {
        "from_http (binary)": (lambda: wire.from_http(headers, body), lambda: bindings.from_http(headers, body)),
        "from_kafka": (
            lambda: wire.from_kafka(kafka_headers, key, value),
            lambda: bindings.from_kafka(kafka_headers, key, value),
        ),
        "from_json (the log)": (lambda: wire.from_json(structured), lambda: bindings.from_json(structured)),
    }


def per_call_us(call: Callable[[], Any], number: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=3)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.eventing.codec", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--number", type=int, default=20000, help="calls per timing")
    args = parser.parse_args()
    conditions = f"Python {platform.python_version()}, cloudevents {version('cloudevents')}, {os.cpu_count()} CPUs"
    print(f"# {conditions}, load average {os.getloadavg()[0]:.1f}; best of 3x{args.number} calls, {args.rounds} rounds")
    sdk: Callable[..., Any] = CloudEvent  # what the fast path would build with the SDK's constructor
    ratios: dict[str, list[tuple[float, float]]] = {name: [] for name in reads()}
    for _ in range(args.rounds):
        for name, (fast, reference) in reads().items():
            lean = per_call_us(fast, args.number)
            wire.ReadEvent = sdk  # type: ignore[misc]  # the same reads, the SDK's constructor building the event
            try:
                constructed = per_call_us(fast, args.number)
            finally:
                wire.ReadEvent = bindings.ReadEvent  # type: ignore[misc]
            strict = per_call_us(reference, args.number)
            ratios[name].append((constructed / lean, strict / lean))
            print(f"{name:20s} ReadEvent {lean:6.2f} us   SDK CloudEvent() {constructed:6.2f} us   "
                  f"reference {strict:6.2f} us")  # fmt: skip
    for name, pairs in ratios.items():
        constructed, strict = (statistics.median(r[i] for r in pairs) for i in (0, 1))
        print(f"# {name}: SDK constructor / ReadEvent {constructed:.2f}x, reference / ReadEvent {strict:.2f}x")


if __name__ == "__main__":
    main()
