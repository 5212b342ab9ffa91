"""Gateway metrics in Prometheus text format: requests, errors, latency, replicas, scale/rollout decisions."""

from __future__ import annotations

import bisect
from collections import defaultdict

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Counters, gauges and one latency histogram, labelled by revision."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.latency: dict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 1))
        self.latency_sum: dict[str, float] = defaultdict(float)
        self.decisions: dict[tuple[str, str], int] = defaultdict(int)
        self.rollouts: dict[tuple[str, str], int] = defaultdict(int)

    def observe(self, revision: str, status: int, seconds: float) -> None:
        self.requests[(revision, status)] += 1
        self.latency[revision][bisect.bisect_left(BUCKETS, seconds)] += 1
        self.latency_sum[revision] += seconds

    def decision(self, revision: str, direction: str) -> None:
        self.decisions[(revision, direction)] += 1

    def rollout(self, model: str, verdict: str) -> None:
        self.rollouts[(model, verdict)] += 1

    def counts(self, revision: str) -> tuple[int, int]:
        """(requests, errors) of one revision; errors are 5xx answers."""
        total = sum(n for (r, _), n in self.requests.items() if r == revision)
        errors = sum(n for (r, s), n in self.requests.items() if r == revision and s >= 500)
        return total, errors

    def render(self, gauges: dict[str, dict[str, float]]) -> str:
        """The exposition text; ``gauges`` maps a gauge name to its value per revision."""
        out = ["# TYPE knflow_requests_total counter"]
        out += [
            f'knflow_requests_total{{revision="{r}",code="{s}"}} {n}' for (r, s), n in sorted(self.requests.items())
        ]
        out.append("# TYPE knflow_errors_total counter")
        for rev in sorted({r for r, _ in self.requests}):
            out.append(f'knflow_errors_total{{revision="{rev}"}} {self.counts(rev)[1]}')
        out.append("# TYPE knflow_request_duration_seconds histogram")
        for rev, counts in sorted(self.latency.items()):
            running = 0
            for bound, n in zip((*BUCKETS, "+Inf"), counts, strict=True):
                running += n
                out.append(f'knflow_request_duration_seconds_bucket{{revision="{rev}",le="{bound}"}} {running}')
            out.append(f'knflow_request_duration_seconds_sum{{revision="{rev}"}} {self.latency_sum[rev]:.6f}')
            out.append(f'knflow_request_duration_seconds_count{{revision="{rev}"}} {running}')
        out.append("# TYPE knflow_scale_decisions_total counter")
        out += [
            f'knflow_scale_decisions_total{{revision="{r}",direction="{d}"}} {n}'
            for (r, d), n in sorted(self.decisions.items())
        ]
        out.append("# TYPE knflow_rollout_decisions_total counter")
        out += [
            f'knflow_rollout_decisions_total{{model="{m}",decision="{d}"}} {n}'
            for (m, d), n in sorted(self.rollouts.items())
        ]
        for name, values in gauges.items():
            out.append(f"# TYPE knflow_{name} gauge")
            out += [f'knflow_{name}{{revision="{r}"}} {v}' for r, v in sorted(values.items())]
        return "\n".join(out) + "\n"
