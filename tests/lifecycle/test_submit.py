"""Submitting to a running platform: ``knflow up`` in one process, ``knflow run FILE`` and ``knflow schedule`` in
others, ``knflow.Client`` in this one; every run reaches a served model through the real platform processes.

The knflow server stores submitted data under ``raw/<dataset>/`` and announces it itself (options in the event),
so the store's arrival source leaves it alone; data dropped by other tools still starts runs, and a data set's
options file beside it starts none.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import urllib3
from sklearn.datasets import load_iris

from eventing.sources.arrival import ANNOUNCED
from eventing.sources.ping import PING_TYPE
from functions.contract import DATA_ARRIVED, DATASET_INGESTED, MODEL_DEPLOYED
from infra.errors import InvalidRequest, NotFound
from infra.localservices import free_platform_ports
from infra.settings import Settings, load_settings
from infra.store import open_store
from knflow import Client
from knflow.drive import submit, watch
from knflow.follow import History, SeenEvent
from tests.eventually import eventually_sync
from tests.lifecycle.tables import numeric_iris_csv as iris_csv
from tests.live_platform import admin_headers, knflow_up

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
#: Small and quick: iris (150 rows) and a few epochs of the MLP.
TRAIN = {"train": {"model": "mlp", "epochs": 5}}
NO_DEPLOY = {"train": {"model": "mlp", "epochs": 2}, "deploy": {"enabled": False}}


@dataclass(frozen=True)
class Up:
    """The platform ``knflow up`` runs, and the environment that names it."""

    env: dict[str, str]
    settings: Settings
    url: str  # the knflow server
    broker: str
    data: Path


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    data = tmp_path_factory.mktemp("up")
    (data / "knflow.toml").write_text("")
    ports = free_platform_ports()
    env = {**os.environ, "KNFLOW_CONFIG": str(data / "knflow.toml"), "KNFLOW_DATA_DIR": str(data), **ports}
    env["PYTHONPATH"] = str(ROOT)
    with knflow_up(env, data):
        settings = load_settings(env, config_file=data / "knflow.toml")
        url, broker = (
            f"http://127.0.0.1:{ports['KNFLOW_DASHBOARD_PORT']}",
            f"http://127.0.0.1:{ports['KNFLOW_BROKER_PORT']}",
        )
        yield Up(env, settings, url, broker, data)


def client_of(up: Up) -> Client:
    return Client.from_settings(up.settings)


def knflow(up: Up, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "knflow", *args], env=up.env, cwd=up.data, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def arrivals(up: Up) -> list[SeenEvent]:
    """Every data.arrived in the broker history."""
    return History(up.broker, admin_headers(up.env)).page(type=DATA_ARRIVED, limit=1000)[0]


def test_knflow_run_submits_to_the_running_platform_and_prints_the_summary(up: Up, tmp_path: Path) -> None:
    data, options = tmp_path / "flowers.csv", tmp_path / "run.json"
    data.write_bytes(iris_csv())
    options.write_text(json.dumps({"model_name": "flowers-cli", **TRAIN}))

    result = knflow(up, "run", str(data), "--options", str(options), "--timeout", "300", timeout=400)

    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert f"knflow: submitting to the platform at {up.url}" in out
    assert "starting the platform" not in out
    assert "knflow run summary" in out and "flowers-cli version 1" in out
    assert "held-out test rows right" in out  # the probe reached the endpoint the running platform serves
    assert "flowers-cli" in [m["name"] for m in client_of(up).models()]

    # A second run whose version the deployment policy keeps out of production still probes what production serves.
    options.write_text(json.dumps({"model_name": "flowers-cli", **TRAIN, "deploy": {"min_improvement": 1.0}}))
    again = knflow(up, "run", str(data), "--options", str(options), "--timeout", "300", timeout=400)
    out = again.stdout
    assert again.returncode == 0, out + again.stderr
    assert "flowers-cli version 2" in out and "deploy          not deployed: " in out, out
    assert "production      flowers-cli, probed with this run's held-out rows" in out, out
    assert "held-out test rows right" in out and "endpoint " not in out, out


def test_client_submits_arrays_and_the_deployed_model_answers(up: Up) -> None:
    x, y = load_iris(return_X_y=True)
    client = client_of(up)

    run = client.submit((x, y), dataset="iris-arrays", options={"model_name": "iris-arrays", **TRAIN})
    types = [event.type for event in run.follow(timeout=300)]

    outcome = run.last
    assert outcome is not None and outcome.status == "deployed", outcome and outcome.summary()
    assert types[0] == DATA_ARRIVED and types[-1] == MODEL_DEPLOYED
    arrived = outcome.events[0]
    assert arrived.data["key"] == run.key and run.key.startswith("raw/iris-arrays/iris-arrays-")
    assert arrived.data["options"]["model_name"] == "iris-arrays"  # the options travel in the event
    assert arrived.extensions["pipeline"] == "lifecycle"
    assert (outcome.model, outcome.version) == ("iris-arrays", 1)
    assert outcome.endpoint and outcome.endpoint.endswith("/v2/models/iris-arrays/infer")
    answer = run.infer(x[:10])
    assert answer["probabilities"].shape == (10, 3)
    assert run.outcome()["status"] == "deployed"
    assert run.runid in [r["runid"] for r in client.runs()]
    assert "iris-arrays" in [m["name"] for m in client.models()]
    assert "lifecycle" in [p["name"] for p in client.pipelines()]
    # The server's own put is announced once: the store's watcher looked at the object and left it alone.
    seen = up.data / "sources" / "filestore-seen.json"
    eventually_sync(lambda: seen.is_file() and run.key in json.loads(seen.read_text()), 30, "the watcher's scan")
    assert [e.data["key"] for e in arrivals(up)].count(run.key) == 1
    assert open_store(up.settings.artifacts).stat(run.key).metadata == {ANNOUNCED: run.runid}


def test_client_submits_a_dataframe_by_its_label_column(up: Up) -> None:
    pandas = pytest.importorskip("pandas")
    frame = pandas.read_csv(io.BytesIO(iris_csv(label="species")))
    client = client_of(up)
    with pytest.raises(InvalidRequest, match="no label column 'label'"):
        client.submit(frame, dataset="iris-frame")

    run = client.submit(frame, dataset="iris-frame", options={"label": "species", **NO_DEPLOY})
    outcome = run.wait(timeout=300)

    assert outcome.status == "not-deployed" and outcome.declined, outcome.summary()
    ingested = outcome.data(DATASET_INGESTED) or {}
    assert (ingested["rows"], ingested["num_classes"], ingested["kind"]) == (150, 3, "tabular")
    assert run.key.endswith(".csv")


def test_a_run_starts_from_an_object_already_in_the_store(up: Up) -> None:
    store = open_store(up.settings.artifacts)
    store.put("raw/kept/flowers.csv", iris_csv(), metadata={ANNOUNCED: "put by a tool that announces itself"})

    run = client_of(up).submit_key("raw/kept/flowers.csv", options={"model_name": "kept-flowers", **NO_DEPLOY})
    outcome = run.wait(timeout=300)

    assert outcome.status == "not-deployed", outcome.summary()
    assert (run.dataset, outcome.registered["name"]) == ("kept", "kept-flowers")  # type: ignore[index]
    assert outcome.events[0].data["key"] == "raw/kept/flowers.csv"


def test_an_options_file_beside_the_data_starts_no_run_but_sets_the_options_of_dropped_data(up: Up) -> None:
    store = open_store(up.settings.artifacts)
    # as another tool does: the data set's options file first, then the data; only the data's arrival starts a run
    key = submit(store, "dropped", "flowers.csv", iris_csv(), {"model_name": "dropped-flowers", **NO_DEPLOY})

    outcome = watch(History(up.broker, admin_headers(up.env)), key, timeout=300, store=store)

    announced = [e.data["key"] for e in arrivals(up)]
    assert "raw/dropped/knflow.json" not in announced  # put before the data: it would have been announced by now
    assert announced.count(key) == 1
    assert "raw/dropped/knflow.json" not in [r["key"] for r in client_of(up).runs()]
    assert outcome.registered is not None and outcome.registered["name"] == "dropped-flowers"


def test_a_schedule_starts_runs_on_its_cron_and_stops_when_deleted(up: Up, tmp_path: Path) -> None:
    store = open_store(up.settings.artifacts)
    store.put("raw/nightly/old.csv", iris_csv(), metadata={ANNOUNCED: "test"})
    store.put("raw/nightly/knflow.json", b"{}")  # not data: the newest *data* object is what runs
    newest = store.put("raw/nightly/new.csv", iris_csv(), metadata={ANNOUNCED: "test"})
    options = tmp_path / "run.json"
    options.write_text(json.dumps({"model_name": "nightly", **NO_DEPLOY}))
    history = History(up.broker, admin_headers(up.env))
    _, before = history.page(type=DATA_ARRIVED, limit=1000)

    added = knflow(
        up, "schedule", "add", "every-2s", "--cron", "* * * * * */2", "--dataset", "nightly", "--options", str(options)
    )
    assert added.returncode == 0, added.stderr
    assert "every-2s" in knflow(up, "schedule", "ls").stdout
    scheduled = _scheduled_arrivals(history, before, "every-2s", at_least=2, timeout=60)
    deleted = knflow(up, "schedule", "delete", "every-2s")
    assert deleted.returncode == 0, deleted.stderr

    assert {e.data["key"] for e in scheduled} == {newest.key}
    assert all(e.extensions["pipeline"] == "lifecycle" for e in scheduled)
    assert all(e.data["options"]["model_name"] == "nightly" for e in scheduled)
    assert len({e.extensions["runid"] for e in scheduled}) == len(scheduled)  # each tick is its own run
    _, after = history.page(type=PING_TYPE, limit=1000)
    later, _ = history.page(type=PING_TYPE, after=after, wait=5.0)  # over two periods of the deleted schedule
    assert [e for e in later if e.source.endswith("/every-2s")] == []
    assert "every-2s" not in knflow(up, "schedule", "ls").stdout


def _scheduled_arrivals(history: History, after: str | None, name: str, *, at_least: int, timeout: float) -> list:
    found: list[SeenEvent] = []

    def more() -> bool:
        nonlocal after
        events, after = history.page(type=DATA_ARRIVED, after=after, wait=1.0)
        found.extend(e for e in events if e.data.get("schedule") == name)
        return len(found) >= at_least

    eventually_sync(more, timeout, f"{at_least} runs of schedule {name}")
    return found


def test_bad_submissions_and_schedules_are_refused_naming_what_is_wrong(up: Up) -> None:
    client, csv = client_of(up), iris_csv()
    with pytest.raises(NotFound, match="no pipeline named 'nope'"):
        client.submit(csv, filename="f.csv", dataset="refused", pipeline="nope")
    with pytest.raises(InvalidRequest, match="unknown run options"):
        client.submit(csv, filename="f.csv", dataset="refused", options={"epochs": 3})
    with pytest.raises(InvalidRequest, match="dataset 'a/b'"):
        client.submit(csv, filename="f.csv", dataset="a/b")
    with pytest.raises(InvalidRequest, match="filename="):
        client.submit(csv, dataset="refused")
    with pytest.raises(NotFound, match="no object"):
        client.submit_key("raw/refused/missing.csv")
    with pytest.raises(InvalidRequest, match="under raw/"):
        client.submit_key("models/x/1/model.onnx")
    with pytest.raises(InvalidRequest, match="not a cron expression"):
        client.add_schedule("bad", cron="every day", dataset="refused")
    with pytest.raises(NotFound, match="no schedule named"):
        client.delete_schedule("never-added")
    http = urllib3.PoolManager(headers=admin_headers(up.env))
    csv_headers = {"content-type": "text/csv", **admin_headers(up.env)}
    answer = http.request("POST", f"{up.url}/api/runs", body=b"a,label\n", headers=csv_headers)
    assert answer.status == 415 and b"multipart/form-data" in answer.data
    answer = http.request("POST", f"{up.url}/api/runs", fields={"dataset": "refused"})
    assert answer.status == 400 and b"no data file" in answer.data
    answer = http.request("POST", f"{up.url}/api/runs", fields={"dataset": "refused", "colour": "red"})
    assert answer.status == 400 and b"unknown form field 'colour'" in answer.data
    assert "refused" not in [r["dataset"] for r in client.runs()]
    assert list(open_store(up.settings.artifacts).list("raw/refused/")) == []
