"""Gateway metrics: requests, errors, latency, queue time, cold starts, replicas, scale and rollout decisions.

The hot path adds to plain dicts (``infra.metrics``); prometheus_client renders them when ``/metrics`` is read.
The names and labels are what model servers' readers (``serving.knserving``) and the dashboard's charts expect.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from infra.metrics import BUCKETS, Tally, Timing, gauge, registry_of, render
from infra.namespaces import split

__all__ = ["BUCKETS", "Metrics", "revision_namespace"]

#: The gauges the gateway reads from its pools at scrape time, with their help text.
GAUGES = {
    "replicas": "replicas running",
    "inflight": "requests in flight",
    "queued": "requests waiting for a replica",
    "cold_start_seconds": "seconds the last replica took from scale-up to ready",
}


def revision_namespace(labels: Mapping[str, str]) -> str | None:
    """The namespace a sample belongs to, from its revision's (or model's) name; None for the gateway's own."""
    name = labels.get("revision") or labels.get("model")
    return split(name)[0] if name else None


class Metrics:
    """Counters, gauges and histograms labelled by revision (rollout decisions by model)."""

    def __init__(self) -> None:
        self.requests = Tally("knflow_requests_total", "inference requests answered", ("revision", "code"))
        self.latency = Timing("knflow_request_duration_seconds", "time to answer an inference", ("revision",))
        self.queue = Timing("knflow_queue_seconds", "time a request waited for a replica to start", ("revision",))
        self.cold_starts = Tally("knflow_cold_starts_total", "replicas started (scale from zero or up)", ("revision",))
        self.decisions = Tally("knflow_scale_decisions_total", "autoscaler decisions", ("revision", "direction"))
        self.rollouts = Tally("knflow_rollout_decisions_total", "canary verdicts", ("model", "decision"))
        self._count, self._time = self.requests.values, self.latency.add  # bound once: observe is per request

    def observe(self, revision: str, status: int, seconds: float) -> None:
        self._count[(revision, status)] += 1
        self._time((revision,), seconds)

    def queued(self, revision: str, seconds: float) -> None:
        """A request waited ``seconds`` for a replica (it found none ready)."""
        self.queue.observe(seconds, revision)

    def cold_start(self, revision: str) -> None:
        self.cold_starts.inc(revision)

    def decision(self, revision: str, direction: str) -> None:
        self.decisions.inc(revision, direction)

    def rollout(self, model: str, verdict: str) -> None:
        self.rollouts.inc(model, verdict)

    def counts(self, revision: str) -> tuple[int, int]:
        """(requests, errors) of one revision; errors are 5xx answers."""
        mine = [(code, n) for (r, code), n in self.requests.values.items() if r == revision]
        return int(sum(n for _, n in mine)), int(sum(n for code, n in mine if code >= 500))

    def families(self, gauges: Mapping[str, Mapping[str, float]]) -> Iterable[Metric]:
        """Every family; ``gauges`` maps a gauge name (``GAUGES``) to its value per revision."""
        errors = Tally("knflow_errors_total", "inference requests answered with a 5xx", ("revision",))
        for revision in sorted({r for r, _ in self.requests.values}):
            errors.inc(revision, amount=self.counts(revision)[1])
        yield from (self.requests.family(), errors.family(), self.latency.family(), self.queue.family())
        yield from (self.cold_starts.family(), self.decisions.family(), self.rollouts.family())
        for name, values in gauges.items():
            yield gauge(f"knflow_{name}", GAUGES.get(name, name), ("revision",), {(r,): v for r, v in values.items()})

    def render(self, gauges: Mapping[str, Mapping[str, float]]) -> str:
        """The exposition text of these metrics alone (the gateway's ``/metrics`` adds the inference logger's)."""
        registry: CollectorRegistry = registry_of(lambda: self.families(gauges))
        return render(registry).decode()
