"""Schedules on Knative: each one renders as a PingSource into the Broker, validated against Knative's schema, with
the Trigger and the ``schedule`` function's Service that turn its pings into runs, as the local platform does."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from eventing.sources.ping import PING_TYPE
from infra import knative
from infra.errors import ConfigError, InvalidRequest
from infra.store_file import FileStore
from infra.validation import parse
from knflow.cluster_models import CANARY_PING as JUDGE  # the canary judge's own PingSource, not a schedule
from knflow.manifests import render
from knflow.schedules import Schedule

ROOT = Path(__file__).parents[1]
FUNC_YAML = ROOT / "func.yaml"
NIGHTLY = Schedule(name="nightly", cron="0 3 * * *", dataset="iris", options={"train": {"epochs": 3}})


def _named(resources: list[dict], kind: str, name: str) -> dict:
    return next(r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name)


def test_a_schedule_renders_as_a_ping_source_into_the_broker_with_its_trigger_and_function() -> None:
    resources = render(FUNC_YAML, schedules=[NIGHTLY])

    ping = _named(resources, "PingSource", "nightly")
    assert ping["apiVersion"] == "sources.knative.dev/v1"
    assert ping["spec"]["schedule"] == "0 3 * * *" and ping["spec"]["contentType"] == "application/json"
    assert json.loads(ping["spec"]["data"]) == NIGHTLY.ping_data()
    assert ping["spec"]["sink"]["ref"] == {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "knflow"}
    trigger = _named(resources, "Trigger", "schedules")
    assert trigger["spec"]["filter"] == {"attributes": {"type": PING_TYPE}}
    assert trigger["spec"]["subscriber"]["ref"]["name"] == "knflow-schedule"
    service = _named(resources, "Service", "knflow-schedule")
    env = service["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "KNFLOW_FUNCTION", "value": "schedule"} in env
    schedule_pings = [r for r in render(FUNC_YAML) if r["kind"] == "PingSource" and r["metadata"]["name"] != JUDGE]
    assert schedule_pings == [] and not any(r["metadata"]["name"] == "schedules" for r in render(FUNC_YAML))


def test_a_seconds_level_schedule_is_refused_for_a_cluster_naming_it() -> None:
    every_5s = Schedule(name="every-5s", cron="* * * * * */5", dataset="iris")
    with pytest.raises(ConfigError, match=r"schedule every-5s: .* seconds field"):
        render(FUNC_YAML, schedules=[every_5s])


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda p: p["spec"].update(schedule="* * * * * *"), "five-field cron"),
        (lambda p: p["spec"].update(colour="red"), "unknown field 'spec.colour'"),
        (lambda p: p["spec"].update(data={"not": "a string"}), "spec.data"),
        (lambda p: p["spec"]["sink"]["ref"].update(name="elsewhere"), "Broker/elsewhere, which is not rendered"),
    ],
)
def test_a_bad_ping_source_fails_validation_naming_the_field(change, reason: str) -> None:
    resources = render(FUNC_YAML, schedules=[NIGHTLY])
    ping = copy.deepcopy(_named(resources, "PingSource", "nightly"))
    change(ping)
    others = [r for r in resources if r["kind"] != "PingSource"]
    with pytest.raises(ConfigError, match=reason):
        knative.validate([*others, ping])


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({"name": "Nightly", "cron": "0 3 * * *", "dataset": "iris"}, "name"),
        ({"name": "n", "cron": "at three", "dataset": "iris"}, "not a cron expression"),
        ({"name": "n", "cron": "0 3 * * *", "dataset": "a/b"}, "dataset 'a/b'"),
        ({"name": "n", "cron": "0 3 * * *", "dataset": "iris", "when": "now"}, "when"),
    ],
)
def test_a_bad_schedule_is_refused_naming_the_field(raw: dict, reason: str) -> None:
    with pytest.raises(InvalidRequest, match=reason):
        parse(Schedule, raw, "schedule")


def test_knflow_manifests_renders_the_stored_schedules_and_names_the_local_only_ones(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "artifacts")
    every_5s = Schedule(name="every-5s", cron="* * * * * */5", dataset="iris")
    for schedule in (NIGHTLY, every_5s):
        store.put(f"schedules/{schedule.name}.json", schedule.model_dump_json().encode())
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "KNFLOW_DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "knflow", "manifests", "--func-yaml", str(FUNC_YAML)],
        capture_output=True, text=True, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    pings = [r["metadata"]["name"] for r in yaml.safe_load_all(result.stdout) if r and r["kind"] == "PingSource"]
    assert pings == ["nightly", JUDGE]  # and the canary judge's round
    assert "# schedules with a seconds field run only locally, not rendered: every-5s" in result.stdout
