"""The monitoring files in docs/ stay true: the Grafana dashboard queries only metrics knflow's servers expose, and
the Prometheus scrape configuration names each server's port from the settings."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client.core import Metric

from eventing.metrics import BrokerMetrics
from functions.runtime.metrics import FunctionMetrics
from infra.metrics import RequestMetrics
from infra.settings import load_settings
from serving.logger import InferenceLogger
from serving.metrics import GAUGES, Metrics

DOCS = Path(__file__).parents[1] / "docs" / "monitoring"


def _names(families: list[Metric]) -> set[str]:
    """Every sample name a family writes (counters' ``_total``, histograms' ``_bucket`` ...)."""
    names = set()
    for family in families:
        names |= {family.name} | {s.name for s in family.samples}
        if family.type == "histogram":
            names |= {f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count")}
        if family.type == "counter":
            names.add(f"{family.name}_total")
    return names


def exposed() -> set[str]:
    gateway = Metrics()
    gateway.observe("r", 200, 0.1)
    gateway.queued("r", 0.1)
    families = [
        *gateway.families({name: {"r": 1} for name in GAUGES}),
        *InferenceLogger("http://127.0.0.1:1", queue_limit=1, queue_bytes=1, max_event_bytes=1).families(),
        *BrokerMetrics().families({"t": 0}, ["t"]),
        *FunctionMetrics().families({"f": 1}),
        *RequestMetrics("knflow_api").families(),
    ]
    return _names(families)


def test_every_metric_the_grafana_dashboard_queries_is_exposed() -> None:
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    queried = {name for expr in exprs for name in re.findall(r"\bknflow_[a-z_]+", expr)}
    assert len(exprs) >= 15 and queried
    assert queried <= exposed(), queried - exposed()


def test_scrape_configuration_names_the_four_servers_ports_with_a_token_file() -> None:
    config = yaml.safe_load((DOCS / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "knflow")
    assert job["authorization"]["credentials_file"]
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    s = load_settings({}, config_file=None)
    ports = (s.broker_port, s.functions_port, s.gateway_port, s.dashboard_port)
    assert targets == {f"127.0.0.1:{port}" for port in ports}
