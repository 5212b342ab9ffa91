"""Prometheus metrics of a knflow server: its own registry, counts kept cheap on hot paths, one ``/metrics`` handler.

Every server owns a ``CollectorRegistry`` (several servers share a test process; the global default registry would
mix them). Hot paths add to plain dicts (``Tally``, ``Timing``): prometheus_client builds the metric families from
them when Prometheus scrapes, so a request pays a dict increment, not a lock and a label lookup; prometheus_client
also escapes the label values and writes the exposition format.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from infra.namespaces import Scope, scope_of

# prometheus_client is imported at the first scrape (or registry): a fresh function host answers its first event
# without it; aiohttp only where a server's handler or middleware is made
if TYPE_CHECKING:
    from aiohttp import web
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

    from infra.guard import Access
    from infra.http import Handler

#: Latency buckets in seconds, the same for every knflow histogram (dashboards compare them).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
Key = tuple[Any, ...]


class Tally:
    """A counter family: ``inc(*label_values)`` on the hot path, one ``CounterMetricFamily`` at scrape time."""

    def __init__(self, name: str, doc: str, labels: Iterable[str]):
        self.name, self.doc, self.labels = name, doc, tuple(labels)
        self.values: defaultdict[Key, float] = defaultdict(int)

    def inc(self, *key: object, amount: float = 1) -> None:
        self.values[key] += amount

    def family(self) -> CounterMetricFamily:
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        for key, value in sorted(self.values.items()):
            family.add_metric([str(k) for k in key], value)  # hot paths may count by int (a status code)
        return family


class Timing:
    """A histogram family of seconds: ``observe(seconds, *label_values)`` counts into ``BUCKETS``."""

    def __init__(self, name: str, doc: str, labels: Iterable[str], buckets: tuple[float, ...] = BUCKETS):
        self.name, self.doc, self.labels, self.buckets = name, doc, tuple(labels), buckets
        self.counts: dict[Key, list[int]] = {}
        self.sums: defaultdict[Key, float] = defaultdict(float)

    def observe(self, seconds: float, *key: object) -> None:
        self.add(key, seconds)

    def add(self, key: Key, seconds: float) -> None:
        """``observe`` for a hot path that already holds the label tuple."""
        counts = self.counts.get(key)
        if counts is None:
            counts = self.counts[key] = [0] * (len(self.buckets) + 1)
        counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.sums[key] += seconds

    def family(self) -> HistogramMetricFamily:
        from prometheus_client.core import HistogramMetricFamily
        from prometheus_client.utils import floatToGoString

        family = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        bounds = [floatToGoString(b) for b in (*self.buckets, math.inf)]
        for key, counts in sorted(self.counts.items()):
            running, buckets = 0, []
            for bound, n in zip(bounds, counts, strict=True):
                running += n
                buckets.append((bound, running))
            family.add_metric(key, buckets, sum_value=self.sums[key])
        return family


def gauge(name: str, doc: str, labels: Iterable[str], values: Mapping[Key, float]) -> GaugeMetricFamily:
    """A gauge family from values read at scrape time."""
    from prometheus_client.core import GaugeMetricFamily

    family = GaugeMetricFamily(name, doc, labels=tuple(labels))
    for key, value in sorted(values.items()):
        family.add_metric(key, value)
    return family


class Collector:
    """A prometheus_client collector whose families ``collect`` builds at each scrape."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]):
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()


def registry_of(collect: Callable[[], Iterable[Metric]]) -> CollectorRegistry:
    """A server's own registry, filled at each scrape by ``collect``."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(Collector(collect))  # duck-typed: prometheus_client's own protocol
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus' text exposition format."""
    from prometheus_client.exposition import generate_latest

    return generate_latest(registry)


def metrics_handler(
    registry: CollectorRegistry, level: Access, owner: Callable[[Mapping[str, str]], str | None] | None = None
) -> Handler:
    """The ``GET /metrics`` handler of a server, with its access decision. With ``owner`` (a sample's labels -> the
    namespace it belongs to, None: the server's own), a caller sees only the series of the namespaces it acts for."""
    from aiohttp import web
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    from infra.guard import access

    @access(level)
    async def metrics(request: web.Request) -> web.Response:
        body = render(registry) if owner is None else render(_seen_by(registry, scope_of(request), owner))
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return metrics


def _seen_by(registry: CollectorRegistry, scope: Scope, owner: Callable[[Mapping[str, str]], str | None]) -> Any:
    """The registry's families with only the samples of namespaces ``scope`` acts for."""
    families = []
    for family in registry.collect():
        family.samples = [s for s in family.samples if (ns := owner(s.labels)) is None or scope.sees(ns)]
        families.append(family)
    return registry_of(lambda: families)


class RequestMetrics:
    """Requests of an aiohttp app by route template, method and status, with their durations."""

    def __init__(self, prefix: str):
        self.requests = Tally(f"{prefix}_requests_total", "HTTP requests answered", ("route", "method", "code"))
        self.duration = Timing(f"{prefix}_request_duration_seconds", "time to answer a request", ("route",))

    def families(self) -> list[Metric]:
        return [self.requests.family(), self.duration.family()]

    def middleware(self) -> Any:
        """The outermost middleware: it sees every answer, the guard's refusals included."""
        from aiohttp import web

        @web.middleware
        async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
            began = time.monotonic()
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                route = _route_of(request)
                self.requests.inc(route, request.method, str(status))
                self.duration.observe(time.monotonic() - began, route)

        return count


def _route_of(request: web.Request) -> str:
    """The route template a request matched (bounded label values), ``unmatched`` for a 404 or 405."""
    info = request.match_info
    resource = info.route.resource
    if info.http_exception is not None or resource is None:
        return "unmatched"
    return resource.canonical
