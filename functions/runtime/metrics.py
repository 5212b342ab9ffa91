"""The function runner's metrics: invocations by function and outcome, their durations, cold starts and workers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from infra.metrics import Tally, Timing, gauge

if TYPE_CHECKING:
    from prometheus_client.core import Metric


def outcome_of(status: int) -> str:
    """``ok`` (2xx), ``refused`` (4xx: not retried), ``failed`` (5xx, the worker gone or not started)."""
    return "ok" if status < 300 else "refused" if status < 500 else "failed"


class FunctionMetrics:
    """Counts the runner (or one function's host) keeps per function; running workers are read at scrape time."""

    def __init__(self) -> None:
        self.invocations = Tally(
            "knflow_function_invocations_total", "events delivered to a function", ("function", "outcome")
        )
        self.duration = Timing(
            "knflow_function_duration_seconds", "time from an event's arrival to the function's answer", ("function",)
        )
        self.cold_starts = Tally("knflow_function_cold_starts_total", "worker processes started", ("function",))

    def invoked(self, function: str, status: int, seconds: float) -> None:
        self.invocations.values[(function, outcome_of(status))] += 1
        self.duration.observe(seconds, function)

    def cold_start(self, function: str) -> None:
        """A worker process of ``function`` started (the first event after scale-to-zero, or a restart)."""
        self.cold_starts.inc(function)

    def families(self, running: Mapping[str, int]) -> list[Metric]:
        """Every family; ``running``: the worker processes running per function."""
        return [
            self.invocations.family(),
            self.duration.family(),
            self.cold_starts.family(),
            gauge(
                "knflow_function_workers",
                "worker processes running",
                ("function",),
                {(name,): n for name, n in running.items()},
            ),
        ]
