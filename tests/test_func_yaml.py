"""func.yaml is a valid Knative func descriptor for the one image that hosts every function."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[1]


def test_func_yaml_has_the_fields_knative_func_reads() -> None:
    spec = yaml.safe_load((ROOT / "func.yaml").read_text())
    assert re.fullmatch(r"\d+\.\d+\.\d+", spec["specVersion"])
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", spec["name"])  # a DNS-1035 label
    assert spec["runtime"] == "python"
    assert spec["invoke"] == "cloudevent"
    assert spec["build"]["builder"] in ("pack", "s2i", "host")
    envs = {e["name"]: e["value"] for e in spec["run"]["envs"]}
    assert {"KNFLOW_FUNCTION", "KNFLOW_BROKER", "KNFLOW_ARTIFACTS"} <= set(envs)
    assert envs["KNFLOW_BROKER"].startswith("kafka://")
    assert envs["KNFLOW_ARTIFACTS"].startswith("s3://")
    health = spec["deploy"]["options"]["healthEndpoints"]
    assert health == {"liveness": "/health/liveness", "readiness": "/health/readiness"}
    assert spec["deploy"]["options"]["scale"]["min"] == 0


def test_func_yaml_settings_parse_as_knflow_settings() -> None:
    from infra.settings import parse_broker_url, parse_store_url

    spec = yaml.safe_load((ROOT / "func.yaml").read_text())
    envs = {e["name"]: e["value"] for e in spec["run"]["envs"]}
    assert parse_broker_url(envs["KNFLOW_BROKER"]).scheme == "kafka"
    assert parse_store_url(envs["KNFLOW_ARTIFACTS"], {}).bucket == "knflow"
