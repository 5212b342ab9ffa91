"""The whole lifecycle through the real platform processes, events only: a file lands, a model answers.

The platform runs as ``knflow up`` runs it (broker, function runner, gateway as child processes on
loopback); the test only drops files into the artifact store and reads the broker's history and
the inference endpoint — no function is called directly.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import numpy as np
import pytest

from eventing.events import STEP_FAILED
from functions import contract
from infra.store import ArtifactStore, open_store
from knflow.commands.demo import DEMO_OPTIONS, digits_npz
from knflow.drive import held_out_split, probe, submit, watch
from knflow.follow import History
from knflow.platform import Platform
from tests.lifecycle.helpers import platform_settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(platform: Platform) -> ArtifactStore:
    return open_store(platform.settings.artifacts)


def test_a_dropped_file_becomes_a_deployed_model_that_predicts(platform: Platform, store: ArtifactStore) -> None:
    options = {**DEMO_OPTIONS, "tuning": {**DEMO_OPTIONS["tuning"], "maxTrialCount": 3}}
    key = submit(store, "digits", "digits-e2e.npz", digits_npz(), options)
    outcome = watch(platform.history(), key, timeout=420)

    types = [e.type for e in outcome.events]
    assert outcome.failure is None, outcome.failure.data if outcome.failure else None
    for expected in (
        contract.DATA_ARRIVED,
        contract.DATASET_INGESTED,
        contract.FEATURES_READY,
        contract.TUNE_COMPLETED,
        contract.MODEL_REGISTERED,
        contract.MODEL_DEPLOYED,
    ):
        assert expected in types
    assert types.count(contract.TRIAL_REQUESTED) == 3 and types.count(contract.MODEL_TRAINED) == 3
    assert (
        types.index(contract.TUNE_COMPLETED)
        < types.index(contract.MODEL_REGISTERED)
        < types.index(contract.MODEL_DEPLOYED)
    )
    assert len({e.extensions["runid"] for e in outcome.events}) == 1

    registered = outcome.registered or {}
    assert registered["metrics"]["test_accuracy"] >= 0.97
    assert registered["lineage"]["raw"][0]["key"] == key
    deployed = outcome.deployed or {}
    assert deployed["endpoint"].endswith("/v2/models/digits/infer")
    assert store.exists(registered["onnx_key"])

    x, y = held_out_split(store, outcome.features or {})
    result = probe(platform.url("gateway"), deployed["name"], x, y, requests=len(y), headers=platform.headers)
    assert result.replicas_before == 0  # the first call woke the model from zero replicas
    assert result.accuracy >= 0.95
    assert result.requests == len(y)


def test_a_corrupt_file_fails_its_run_with_the_reason_and_leaves_no_dataset(
    platform: Platform, store: ArtifactStore
) -> None:
    key = submit(store, "broken", "broken.npz", b"PK\x03\x04 this is not a zip archive", None)
    outcome = watch(platform.history(), key, timeout=120)
    failure = outcome.failure
    assert failure is not None and failure.type == STEP_FAILED
    assert failure.data["trigger"] == "lifecycle-ingest"
    assert failure.data["status"] == 400
    assert "broken" in failure.data["error"]
    assert list(store.list("datasets/broken/")) == []
    assert outcome.registered is None


def test_wrong_npz_keys_fail_the_run_naming_the_keys(platform: Platform, store: ArtifactStore) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, features=np.zeros((50, 4)), target=np.zeros(50))
    key = submit(store, "wrongkeys", "wrong.npz", buffer.getvalue(), None)
    outcome = watch(platform.history(), key, timeout=120)
    assert outcome.failure is not None
    assert "x" in outcome.failure.data["error"] and "y" in outcome.failure.data["error"]
    assert list(store.list("datasets/wrongkeys/")) == []


@pytest.mark.timeout(600)  # two platform starts and six trainings, each wait bounded below
def test_tuning_survives_a_platform_crash_without_losing_or_repeating_trials(tmp_path: Path) -> None:
    settings = platform_settings(tmp_path)
    options = {**DEMO_OPTIONS, "tuning": {**DEMO_OPTIONS["tuning"], "maxTrialCount": 6, "earlyStopping": None}}
    platform = Platform.start(settings)
    try:
        store = open_store(settings.artifacts)
        key = submit(store, "digits", "digits-crash.npz", digits_npz(), options)
        history = platform.history()
        runid = history.find_arrival(key, timeout=60).extensions["runid"]
        before = _trained_trials(history, runid, at_least=2, timeout=240)
        platform.kill()  # every process of the platform, mid-experiment
        crashed_at = dt.datetime.now(dt.UTC)
    finally:
        platform.stop()

    with Platform.start(settings) as restarted:
        outcome = watch(restarted.history(), key, timeout=420)
    assert outcome.failure is None, json.dumps(outcome.failure.data) if outcome.failure else None
    completed = outcome.tuning or {}
    trials = [t["trial"] for t in completed["trials"]]
    assert sorted(trials) == [f"trial-{i:04d}" for i in range(6)]  # none lost, none twice
    assert all(t["status"] == "Succeeded" for t in completed["trials"])
    # A trial finished before the crash is not trained again: a redelivered request only re-announces
    # it, so its stored result is still the one written before the crash.
    for trial in before:
        assert store.stat(f"runs/{runid}/trials/{trial}/result.json").modified < crashed_at
    assert outcome.deployed is not None


def _trained_trials(history: History, runid: str, *, at_least: int, timeout: float) -> list[str]:
    """Trial ids with a model.trained event, once there are ``at_least`` of them."""
    import time

    deadline, seen, after = time.monotonic() + timeout, [], None
    while time.monotonic() < deadline:
        events, after = history.page(runid=runid, type=contract.MODEL_TRAINED, after=after, wait=1.0)
        seen += [e.data["trial"] for e in events]
        if len(seen) >= at_least:
            return seen
    raise AssertionError(f"only {len(seen)} trial(s) trained within {timeout}s")
