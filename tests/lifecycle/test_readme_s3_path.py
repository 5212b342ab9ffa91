"""The README's S3 path as a user in a clean shell takes it: ``knflow services`` prints two ``export`` lines; with
them ``knflow up`` runs the platform on Kafka (tansu) and S3 (SeaweedFS, which sends no notifications),
``knflow demo`` ends with a served model, and a file put into ``raw/`` with the plain ``minio`` client starts a run
of its own through the broker's polling source."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from minio import Minio

from functions.contract import DATA_ARRIVED
from infra.localservices import free_platform_ports
from infra.settings import load_settings
from knflow.drive import watch
from knflow.follow import History
from tests.eventually import eventually_sync
from tests.lifecycle.tables import numeric_iris_csv as iris_csv
from tests.live_platform import ROOT, admin_headers, knflow_up, stop

pytestmark = pytest.mark.slow

#: Small and quick: the demo's digits with one epoch of its CNN, and iris with a few epochs of the MLP.
DEMO_OPTIONS = {"model_name": "digits", "train": {"model": "cnn", "epochs": 1}}
FLOWERS_OPTIONS = {"model_name": "flowers", "train": {"model": "mlp", "epochs": 5}}


def clean_environment(data: Path) -> dict[str, str]:
    """A shell with no knflow or S3 settings (no credentials either: SeaweedFS takes anonymous requests)."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("KNFLOW_", "AWS_", "MINIO_"))}
    ports = free_platform_ports()
    (data / "knflow.toml").write_text("")
    path = f"{Path(sys.executable).parent}{os.pathsep}{kept.get('PATH', '')}"
    return {**kept, **ports, "KNFLOW_DATA_DIR": str(data / "knflow"), "PATH": path, "PYTHONPATH": str(ROOT)}


@pytest.fixture
def services(tmp_path: Path) -> Iterator[dict[str, str]]:
    """``knflow services`` running; the environment with its printed ``export`` lines applied."""
    env = clean_environment(tmp_path)
    out = tmp_path / "services.out"
    with out.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "knflow", "services"], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        ready = lambda: process.poll() is not None or "services running" in out.read_text()  # noqa: E731
        eventually_sync(ready, 120, "knflow services to start")
        assert process.poll() is None, out.read_text()
        yield {**env, **exports(out.read_text())}
    finally:
        stop(process)


def exports(text: str) -> dict[str, str]:
    """What the ``export NAME=VALUE`` lines of a shell snippet set, as the shell would read them."""
    found = {}
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["export"]:
            found.update(word.split("=", 1) for word in words[1:])
    return found


def test_readme_s3_path_services_demo_and_a_file_put_with_the_minio_client(
    services: dict[str, str], tmp_path: Path
) -> None:
    env = services
    assert set(exports((tmp_path / "services.out").read_text())) == {"KNFLOW_BROKER", "KNFLOW_ARTIFACTS"}
    settings = load_settings(env, config_file=tmp_path / "knflow.toml")
    assert (settings.broker.scheme, settings.artifacts.scheme, settings.artifacts.create) == ("kafka", "s3", True)
    (tmp_path / "demo.json").write_text(json.dumps(DEMO_OPTIONS))
    with knflow_up(env, tmp_path):
        demo = subprocess.run(
            [sys.executable, "-m", "knflow", "demo", "--options", "demo.json", "--timeout", "300"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=400,
        )  # fmt: skip
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "knflow: submitting to the platform at" in demo.stdout  # through the knflow server, which announces
        assert "held-out test rows right" in demo.stdout  # the served model answered
        demo_key = re.search(r"submitted (raw/digits/\S+) as run", demo.stdout).group(1)  # type: ignore[union-attr]

        endpoint = settings.artifacts.endpoint
        client = Minio(endpoint, secure=False)  # the plain minio client, as another tool would put data
        options = json.dumps(FLOWERS_OPTIONS).encode()
        client.put_object("knflow", "raw/flowers/knflow.json", io.BytesIO(options), len(options))
        data = iris_csv()
        client.put_object("knflow", "raw/flowers/flowers.csv", io.BytesIO(data), len(data))

        history = History(f"http://127.0.0.1:{env['KNFLOW_BROKER_PORT']}", admin_headers(env))
        outcome = watch(history, "raw/flowers/flowers.csv", timeout=300)
        assert outcome.deployed is not None, outcome.summary()
        assert outcome.registered is not None and outcome.registered["name"] == "flowers"  # its options file's
        arrived = history.page(type=DATA_ARRIVED, limit=1000)[0]
    assert [e.data["key"] for e in arrived] == [demo_key, "raw/flowers/flowers.csv"]  # each once, nothing else
    assert arrived[1].source == "knflow/s3poll/knflow"
