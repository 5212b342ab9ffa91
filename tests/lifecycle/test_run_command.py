"""``knflow run FILE`` with no platform running: it starts an embedded one, submits to it like to any other,
prints the summary and stops it again."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from infra.localservices import free_platform_ports
from tests.lifecycle.test_submit import ROOT, TRAIN, iris_csv

pytestmark = pytest.mark.slow


def test_knflow_run_starts_a_platform_when_none_answers_and_stops_it_after(tmp_path: Path) -> None:
    (tmp_path / "knflow.toml").write_text("")
    ports = free_platform_ports()
    env = {**os.environ, "KNFLOW_CONFIG": str(tmp_path / "knflow.toml"), "KNFLOW_DATA_DIR": str(tmp_path), **ports}
    env["PYTHONPATH"] = str(ROOT)
    (tmp_path / "flowers.csv").write_bytes(iris_csv())
    (tmp_path / "run.json").write_text(json.dumps({"model_name": "flowers", **TRAIN}))

    result = subprocess.run(
        [sys.executable, "-m", "knflow", "run", "flowers.csv", "--options", "run.json", "--timeout", "300"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=400,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    assert "knflow: starting the platform" in result.stdout
    assert "knflow run summary" in result.stdout and "flowers version 1" in result.stdout
    assert "held-out test rows right" in result.stdout
    dashboard = int(ports["KNFLOW_DASHBOARD_PORT"])
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", dashboard)) != 0  # the platform it started is gone
