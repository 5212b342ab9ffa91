"""Reading a knflow server's ``/metrics`` the way Prometheus does: prometheus_client's parser, samples by labels."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import ClientSession
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition text, by (sample name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(http: ClientSession, base: str, headers: Mapping[str, str] | None = None) -> Samples:
    """GET ``base/metrics``, check it is Prometheus' text format, and parse it."""
    async with http.get(f"{base}/metrics", headers=headers) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST  # what generate_latest writes
        return parse(await response.text())
