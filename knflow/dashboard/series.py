"""Serving over time: the gateway's ``/metrics`` sampled every few seconds into a bounded ring (the last ten
minutes), and per revision the requests/s, errors/s, p50/p99 latency and replicas between consecutive samples.

Rates and quantiles come from counter and histogram deltas the way Prometheus' ``rate`` and
``histogram_quantile`` compute them (linear within a bucket; a counter that went down was reset).
``GET /api/serving/{name}/series`` answers them for one model's revisions, with its traffic split.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from infra.aio import cancel_and_wait
from infra.asyncclient import AsyncClient
from infra.errors import Unavailable
from infra.guard import access
from infra.http import json_response
from infra.namespaces import addressed

if TYPE_CHECKING:
    from knflow.dashboard.server import Dashboard

log = logging.getLogger(__name__)
SAMPLE_S = 2.0
WINDOW_S = 600.0
QUANTILES = (("p50_ms", 0.5), ("p99_ms", 0.99))


@dataclass(frozen=True)
class Sample:
    """One scrape of the gateway: per revision, its counters, latency buckets and replicas at ``time``."""

    time: float
    requests: dict[str, float] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)  # revision -> {le: cumulative count}
    replicas: dict[str, float] = field(default_factory=dict)


def parse_sample(text: str, now: float) -> Sample:
    """A Sample from the gateway's Prometheus text (``knflow_requests_total{revision,code}``, the
    ``knflow_request_duration_seconds`` histogram and the ``knflow_replicas`` gauge, by revision)."""
    sample = Sample(now)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            rev = s.labels.get("revision")
            if rev is None:
                continue
            if s.name == "knflow_requests_total":
                sample.requests[rev] = sample.requests.get(rev, 0.0) + s.value
                if s.labels.get("code", "").startswith("5"):
                    sample.errors[rev] = sample.errors.get(rev, 0.0) + s.value
            elif s.name == "knflow_request_duration_seconds_bucket":
                sample.buckets.setdefault(rev, {})[float(s.labels["le"])] = s.value
            elif s.name == "knflow_replicas":
                sample.replicas[rev] = s.value
    return sample


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The q-quantile of cumulative buckets ``{le: count}`` (Prometheus' histogram_quantile), None when empty."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if le == float("inf"):
                return lower  # beyond the last finite bound: its bound is the best estimate
            return lower + (le - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        lower, below = le, count
    return lower


def _delta(now: float, before: float) -> float:
    return now - before if now >= before else now  # a counter that went down was reset (gateway restart)


def revision_points(samples: list[Sample], revision: str) -> dict[str, list[Any]]:
    """One revision's series between consecutive samples: time, rps, errors/s, p50/p99 (ms), replicas."""
    points: dict[str, list[Any]] = {"t": [], "rps": [], "errors": [], "p50_ms": [], "p99_ms": [], "replicas": []}
    for before, after in itertools.pairwise(samples):
        dt = after.time - before.time
        if dt <= 0:
            continue
        points["t"].append(round(after.time, 3))
        points["rps"].append(_delta(after.requests.get(revision, 0.0), before.requests.get(revision, 0.0)) / dt)
        points["errors"].append(_delta(after.errors.get(revision, 0.0), before.errors.get(revision, 0.0)) / dt)
        old = before.buckets.get(revision, {})
        diff = {le: _delta(n, old.get(le, 0.0)) for le, n in after.buckets.get(revision, {}).items()}
        for name, q in QUANTILES:
            value = quantile(q, diff)
            points[name].append(None if value is None else round(value * 1000, 3))
        points["replicas"].append(after.replicas.get(revision, 0.0))
    return points


class ServingSeries:
    """Samples the gateway's ``/metrics`` every ``interval_s`` into a ring of ``window_s`` seconds."""

    def __init__(self, gateway: AsyncClient, interval_s: float = SAMPLE_S):
        self.url = gateway.base_url + "/metrics"
        self.http = gateway
        self.interval_s = interval_s
        self.samples: deque[Sample] = deque(maxlen=int(WINDOW_S / interval_s) + 1)
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="serving-series")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(self.interval_s)

    async def sample(self) -> None:
        """Scrape once; a gateway that does not answer leaves a gap (logged once until it answers again)."""
        try:
            answer = await self.http.send("GET", "/metrics")
            ok, text = answer.status == 200, answer.data.decode("utf-8", "replace")
        except Unavailable as exc:
            ok, text = False, str(exc)
        if not ok:
            if not self._failing:
                log.info("serving series: %s cannot be read (%s); retrying every %.0f s", self.url, text[:200],
                         self.interval_s)  # fmt: skip
            self._failing = True
            return
        self._failing = False
        try:
            self.samples.append(parse_sample(text, time.time()))
        except ValueError as exc:
            log.warning("serving series: %s is not Prometheus text: %s", self.url, exc)

    def model_series(self, model: dict[str, Any]) -> dict[str, Any]:
        """A model's view (``GatewayView.model``) with each revision's points over the window."""
        samples = list(self.samples)
        revisions = [{**rev, "points": revision_points(samples, rev["id"])} for rev in model["revisions"]]
        return {
            "model": model["model"],
            "interval_s": self.interval_s,
            "window_s": WINDOW_S,
            "traffic": model["traffic"],
            "revisions": revisions,
        }


def add_routes(app: web.Application, dashboard: Dashboard) -> None:
    """Register ``GET /api/serving/{name}/series`` on the knflow server's app."""

    @access("viewer")
    async def series(request: web.Request) -> web.Response:
        # 404 for a model the gateway lacks in the namespace the request addresses
        model = await dashboard.gateway.model(request.match_info["name"], addressed(request))
        if dashboard.series is None:
            raise Unavailable("the knflow server is not started")
        return json_response(dashboard.series.model_series(model))

    app.router.add_get("/api/serving/{name}/series", series)
