"""Pipelines on a running platform through the CLI and the knflow API: apply a spec (scoped triggers, a step's own
instance with its settings), run events through it, re-apply a changed spec, delete it; mistakes are refused."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from eventing.client import publish
from eventing.events import new_event, new_runid
from infra.localservices import free_platform_ports
from infra.settings import load_settings
from knflow.platform import Platform
from tests.eventually import eventually_sync

ROOT = Path(__file__).parents[1]
PROBE = ROOT / "tests" / "functions" / "fixtures" / "step_probe.py"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    data = tmp_path_factory.mktemp("pipelines")
    (data / "knflow.toml").write_text("")
    env = {
        "KNFLOW_DATA_DIR": str(data),
        "KNFLOW_CONFIG": str(data / "knflow.toml"),
        **free_platform_ports(),
    }
    with Platform.start(load_settings(env, config_file=data / "knflow.toml")) as running:
        running.api("functions").call("PUT", "/admin/functions/probe", {"target": str(PROBE)})
        running.env = env  # type: ignore[attr-defined]
        yield running


def knflow(platform: Platform, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **platform.env, "PYTHONPATH": str(ROOT)}  # type: ignore[attr-defined]
    return subprocess.run([sys.executable, "-m", "knflow", *args], capture_output=True, text=True, env=env, timeout=120)


def spec_file(tmp_path: Path, name: str, *steps: dict) -> Path:
    path = tmp_path / f"{name}.yaml"
    raw = {
        "apiVersion": "knflow.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {"steps": steps},
    }
    path.write_text(yaml.safe_dump(raw))
    return path


def probe_step(name: str, event_type: str, settings: dict | None = None) -> dict:
    step = {"name": name, "function": "probe", "triggers": [{"filter": {"type": event_type}}], "emits": ["test.probed"]}
    return step | ({"settings": settings} if settings else {})


def triggers(platform: Platform) -> dict[str, dict]:
    return {t["name"]: t["spec"] for t in platform.api("broker").call("GET", "/triggers")["items"]}


def probed(platform: Platform, runid: str) -> list:
    events, _ = platform.history().page(runid=runid, type="test.probed")
    return events


def test_an_applied_pipeline_takes_its_own_events_and_its_step_gets_its_settings(
    platform: Platform, tmp_path: Path
) -> None:
    path = spec_file(tmp_path, "probing", probe_step("first", "test.start", {"threshold": 3}))
    result = knflow(platform, "pipeline", "apply", str(path))
    assert result.returncode == 0, result.stderr
    assert "probing-first" in result.stdout
    trigger = triggers(platform)["probing-first"]
    assert trigger["filter"]["attributes"] == {"type": "test.start", "pipeline": "probing"}
    assert trigger["subscriber"]["uri"].endswith("/functions/probing-first")  # a step with settings: its own instance

    theirs, ours = new_runid(), new_runid()
    broker = platform.url("broker") + "/"
    publish(broker, new_event("test.start", "/tests", {"n": 0}, runid=theirs, extensions={"pipeline": "lifecycle"}))
    publish(broker, new_event("test.start", "/tests", {"n": 1}, runid=ours, extensions={"pipeline": "probing"}))
    (reply,) = eventually_sync(lambda: probed(platform, ours), 30, "the probe's reply")
    assert reply.data == {"settings": {"threshold": 3}, "got": {"n": 1}, "function": "probing-first"}
    assert reply.extensions["pipeline"] == "probing" and reply.extensions["runid"] == ours
    assert probed(platform, theirs) == []  # another pipeline's event of the same type is not ours

    listed = knflow(platform, "pipeline", "ls")
    assert listed.returncode == 0 and "probing" in listed.stdout and "lifecycle" in listed.stdout
    shown = knflow(platform, "pipeline", "show", "probing", "-o", "json")
    assert yaml.safe_load(shown.stdout)["spec"]["steps"][0]["settings"] == {"threshold": 3}


def test_reapplying_a_changed_spec_removes_what_it_dropped_and_delete_removes_the_rest(
    platform: Platform, tmp_path: Path
) -> None:
    first = spec_file(tmp_path, "changing", probe_step("a", "test.a", {"k": 1}), probe_step("b", "test.b"))
    assert knflow(platform, "pipeline", "apply", str(first)).returncode == 0
    assert {"changing-a", "changing-b"} <= set(triggers(platform))
    hosted = platform.api("functions").call("GET", "/functions")
    assert "changing-a" in hosted

    second = spec_file(tmp_path, "changing", probe_step("b", "test.b"))
    result = knflow(platform, "pipeline", "apply", str(second))
    assert result.returncode == 0 and "removed: changing-a, changing-a" in result.stdout
    assert "changing-a" not in triggers(platform) and "changing-b" in triggers(platform)
    assert "changing-a" not in platform.api("functions").call("GET", "/functions")

    assert knflow(platform, "pipeline", "delete", "changing").returncode == 0
    assert not {"changing-a", "changing-b"} & set(triggers(platform))
    missing = knflow(platform, "pipeline", "show", "changing")
    assert missing.returncode == 2 and "no pipeline named 'changing'" in missing.stderr


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (probe_step("x", "test.x") | {"function": "nope"}, "unknown function 'nope'"),
        (probe_step("x", "test.probed"), "loop on its own output"),
    ],
)
def test_a_spec_the_platform_cannot_run_is_refused_and_changes_nothing(
    platform: Platform, tmp_path: Path, step: dict, message: str
) -> None:
    before = triggers(platform)
    result = knflow(platform, "pipeline", "apply", str(spec_file(tmp_path, "refused", step)))
    assert result.returncode == 2 and message in result.stderr
    assert triggers(platform) == before


def test_the_platform_starts_with_the_shipped_lifecycle_applied(platform: Platform) -> None:
    names = set(triggers(platform))
    assert {"lifecycle-ingest", "lifecycle-train-trials", "lifecycle-tune-failures", "lifecycle-deploy"} <= names
    assert not names & {"ingest", "train-trials"}  # the names before pipelines were specs
