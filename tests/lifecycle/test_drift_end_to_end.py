"""The loop closed on the real platform processes, events only: a deployed model logs its traffic, shifted inputs
raise dev.knflow.drift.detected with per-feature scores, and the default pipeline starts a retraining run from it;
unshifted inputs raise nothing.

One platform for the module (``knflow up``'s processes on loopback); the test drops a file into the store, sends V2
requests to the gateway, and reads the broker's history and the drift step's window in the store.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import orjson
import pytest
import urllib3

from eventing.events import STEP_FAILED
from functions.contract import DATA_ARRIVED, DATASET_INGESTED, DRIFT_DETECTED, INFERENCE_REQUEST, MODEL_REGISTERED
from functions.drift import Window
from infra.store import ArtifactStore, open_store
from knflow.commands.demo import digits_npz
from knflow.drive import held_out_split, submit, watch
from knflow.follow import History, SeenEvent
from knflow.platform import Platform
from tests.eventually import eventually_sync
from tests.lifecycle.helpers import platform_settings

pytestmark = pytest.mark.slow

WINDOW = 200  # the digits test split has 270 rows; unshifted windows of 200 stay well below the threshold
OPTIONS = {
    "model_name": "digits",
    "train": {"model": "mlp", "epochs": 4},  # a short run: the loop is under test, not the model
    "deploy": {"log_sample_rate": 1.0},
    "drift": {"window": WINDOW, "threshold": 0.2, "cooldown_s": 3600},
}


@dataclass(frozen=True)
class Deployed:
    runid: str
    version: int
    held_out: np.ndarray  # raw test images, as a client sends them


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with Platform.start(platform_settings(tmp_path_factory.mktemp("platform"))) as running:
        yield running


@pytest.fixture(scope="module")
def store(platform: Platform) -> ArtifactStore:
    return open_store(platform.settings.artifacts)


@pytest.fixture(scope="module")
def deployed(platform: Platform, store: ArtifactStore) -> Deployed:
    key = submit(store, "digits", "digits.npz", digits_npz(), OPTIONS)
    outcome = watch(platform.history(), key, timeout=300)
    assert outcome.failure is None, outcome.failure.data if outcome.failure else None
    assert outcome.deployed is not None and outcome.deployed["traffic_percent"] == 100
    x, _y = held_out_split(store, outcome.features or {})
    return Deployed(outcome.runid, int(outcome.deployed["version"]), x.astype(np.float32))


def send(platform: Platform, rows: np.ndarray, per_request: int = 20) -> None:
    """V2 requests of ``per_request`` images each, to the deployed model."""
    http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5.0, read=60.0))
    url = f"{platform.url('gateway')}/v2/models/digits/infer"
    for i in range(0, len(rows), per_request):
        batch = rows[i : i + per_request]
        tensor = {"name": "input", "datatype": "FP32", "shape": list(batch.shape), "data": batch.ravel().tolist()}
        answer = http.request("POST", url, body=orjson.dumps({"inputs": [tensor]}))
        assert answer.status == 200, answer.data[:200]


def closes_window(store: ArtifactStore, d: Deployed, index: int) -> Window:
    """The drift step's window once window ``index`` has closed."""
    return eventually_sync(
        lambda: (w := Window.load(store, "digits", d.version)) is not None and w.index > index and w,
        timeout=120,
        what=f"window {index} of digits/{d.version} to close",
    )


def events(history: History, *, type: str, runid: str | None = None) -> list[SeenEvent]:
    found, after = [], None
    while True:
        page, after = history.page(type=type, runid=runid, after=after, limit=1000)
        found += page
        if not page:
            return found


def next_window(store: ArtifactStore, d: Deployed) -> int:
    window = Window.load(store, "digits", d.version)
    assert window is None or len(window.rows) == 0  # each test sends whole windows
    return window.index if window is not None else 0


def test_unshifted_inputs_close_a_window_without_drift(  # type: ignore[no-untyped-def]
    platform: Platform, store: ArtifactStore, deployed
) -> None:
    index = next_window(store, deployed)
    send(platform, deployed.held_out[:WINDOW])
    window = closes_window(store, deployed, index)
    assert window.closed["index"] == index and window.closed["event"] is None, window.closed
    history = platform.history()
    logged = events(history, type=INFERENCE_REQUEST, runid=deployed.runid)
    assert len(logged) >= WINDOW // 20 and logged[0].extensions["pipeline"] == "lifecycle"
    detected = events(history, type=DRIFT_DETECTED, runid=deployed.runid)
    assert all(e.data["window"]["index"] != index for e in detected)


def test_shifted_inputs_raise_drift_and_start_a_retraining_run(  # type: ignore[no-untyped-def]
    platform: Platform, store: ArtifactStore, deployed
) -> None:
    index = next_window(store, deployed)
    send(platform, np.clip(deployed.held_out[:WINDOW] + 3, 0, 16))  # a brighter background
    history = platform.history()

    def of_the_window() -> list[SeenEvent]:
        found = events(history, type=DRIFT_DETECTED, runid=deployed.runid)
        return [e for e in found if e.data["window"]["index"] == index]

    detected = eventually_sync(of_the_window, timeout=120, what="dev.knflow.drift.detected")[0]
    assert detected.extensions["pipeline"] == "lifecycle" and detected.data["version"] == deployed.version
    scores = detected.data["scores"]
    assert len(scores) == 64 and detected.data["score"] == max(scores.values()) >= 0.2
    assert len(detected.data["drifted"]) > 10

    def started_by_it() -> list[SeenEvent]:
        found = events(history, type=DATA_ARRIVED)
        return [e for e in found if (e.data.get("retrain") or {}).get("drift") == detected.id]

    arrival = eventually_sync(started_by_it, timeout=60, what="the retraining run's data.arrived")[0]
    runid = arrival.extensions["runid"]
    assert runid != deployed.runid and arrival.extensions["pipeline"] == "lifecycle"
    assert arrival.data["key"] == "raw/digits/digits.npz" and arrival.data["retrain"]["run"] == deployed.runid
    retraining = follow(history, runid, until=MODEL_REGISTERED, timeout=300)
    types = [e.type for e in retraining]
    assert DATASET_INGESTED in types and MODEL_REGISTERED in types and STEP_FAILED not in types
    registered = next(e for e in retraining if e.type == MODEL_REGISTERED).data
    assert registered["name"] == "digits" and registered["version"] > deployed.version


def follow(history: History, runid: str, *, until: str, timeout: float) -> list[SeenEvent]:
    """A run's events until one of type ``until`` (or a failure) shows up."""
    seen, after, deadline = [], None, time.monotonic() + timeout
    while time.monotonic() < deadline:
        page, after = history.page(runid=runid, after=after, wait=1.0)
        seen += page
        if any(e.type in (until, STEP_FAILED) for e in page):
            return seen
    raise AssertionError(f"run {runid} did not reach {until} within {timeout}s: {[e.type for e in seen]}")
