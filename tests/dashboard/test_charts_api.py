"""The APIs the dashboard's charts read: a run's training curves from the store, a served model's series sampled
from the real gateway's /metrics."""

from __future__ import annotations

import asyncio
import json

from aiohttp import ClientSession

from functions.tuning.experiment import Experiment, save_experiment
from infra.store import ArtifactStore
from knflow.dashboard.curves import CurveReader
from knflow.dashboard.series import Sample, quantile, revision_points
from tests.dashboard.conftest import Seeded
from tests.eventually import eventually

SPEC = {
    "objective": {"metric": "val_accuracy", "type": "maximize"},
    "parameters": [{"name": "lr", "type": "double", "min": 0.001, "max": 0.1}],
}


def write_trial(store: ArtifactStore, runid: str, trial: str, epochs: int, status: str | None) -> None:
    prefix = f"runs/{runid}/trials/{trial}/"
    lines = [
        {"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.1 / e, "val_accuracy": 0.5 + e / 100}
        for e in range(1, epochs + 1)
    ]
    store.put(prefix + "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in lines).encode())
    if status:
        store.put(prefix + "result.json", json.dumps({"trial": trial, "status": status}).encode())


async def get(http: ClientSession, url: str) -> tuple[int, dict]:
    async with http.get(url) as response:
        return response.status, await response.json()


async def test_curves_answer_each_trials_epochs_status_and_the_objective(
    platform: Seeded, file_store: ArtifactStore, http: ClientSession
) -> None:
    runid = platform.ok_runid
    await asyncio.to_thread(save_experiment, file_store, Experiment(runid, SPEC, {}, best="trial-0000"))
    trials = (("trial-0000", 3, "Succeeded"), ("trial-0001", 2, "EarlyStopped"), ("trial-0002", 1, None))
    for trial, epochs, status in trials:
        await asyncio.to_thread(write_trial, file_store, runid, trial, epochs, status)
    status, body = await get(http, f"{platform.dashboard.url}/api/runs/{runid}/curves")
    assert status == 200, body
    assert body["objective"] == {"metric": "val_accuracy", "type": "maximize"}
    assert body["best"] == "trial-0000"
    assert [s["trial"] for s in body["series"]] == ["trial-0000", "trial-0001", "trial-0002"]
    assert [s["status"] for s in body["series"]] == ["Succeeded", "EarlyStopped", "Running"]
    assert [s["early_stopped"] for s in body["series"]] == [False, True, False]
    first = body["series"][0]["metrics"]
    assert first["epoch"] == [1, 2, 3]
    assert first["val_accuracy"] == [0.51, 0.52, 0.53]
    assert set(first) == {"epoch", "train_loss", "val_loss", "val_accuracy"}

    # While a trial trains, its next epoch shows on the next poll.
    await asyncio.to_thread(write_trial, file_store, runid, "trial-0002", 2, None)
    status, body = await get(http, f"{platform.dashboard.url}/api/runs/{runid}/curves")
    assert body["series"][2]["metrics"]["epoch"] == [1, 2]


async def test_curves_of_an_unknown_run_answer_404_and_a_bad_run_id_400(platform: Seeded, http: ClientSession) -> None:
    status, body = await get(http, f"{platform.dashboard.url}/api/runs/run-nope/curves")
    assert status == 404 and "no run 'run-nope'" in body["error"]
    status, body = await get(http, f"{platform.dashboard.url}/api/runs/%2E%2E/curves")
    assert status in (400, 404), body


async def test_serving_series_follow_each_revisions_requests_latency_and_replicas_with_the_split(
    platform: Seeded, http: ClientSession
) -> None:
    url = f"{platform.dashboard.url}/api/serving/digits/series"
    gateway = platform.dashboard.gateway_url
    async with http.post(f"{gateway}/v1/models/digits/revisions", json={"percent": 30, "tag": "canary"}) as answer:
        assert answer.status == 201, await answer.text()
        canary = (await answer.json())["revision"]

    async def points() -> dict | None:
        status, body = await get(http, url)
        assert status == 200, body
        return body if all(r["points"]["t"] for r in body["revisions"]) else None

    body = await eventually(points, timeout=15, what="a first pair of samples")
    assert body["model"] == "digits"
    split = {r["id"]: r["percent"] for r in body["revisions"]}
    assert split == {platform.revision: 70, canary: 30}
    assert sorted(t["percent"] for t in body["traffic"]) == [30, 70]
    for revision in body["revisions"]:
        assert set(revision["points"]) == {"t", "rps", "errors", "p50_ms", "p99_ms", "replicas"}
        assert len({len(v) for v in revision["points"].values()}) == 1  # every column has a value per point

    request = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]}
    for _ in range(40):
        async with http.post(f"{gateway}/v2/models/digits/infer", json=request) as response:
            assert response.status == 200

    async def moved() -> dict | None:
        _, body = await get(http, url)
        busy = {r["id"]: r["points"] for r in body["revisions"] if any(v > 0 for v in r["points"]["rps"][-3:])}
        return busy if len(busy) == 2 and all(any(p["p50_ms"][-3:]) for p in busy.values()) else None

    busy = await eventually(moved, timeout=15, what="both revisions' requests in the series")
    assert all(max(p["replicas"]) >= 1 and max(p["errors"]) == 0 for p in busy.values())
    status, body = await get(http, f"{platform.dashboard.url}/api/serving/nope/series")
    assert status == 404 and "nope" in body["error"]


class CountingStore:
    """The store, counting the objects read (a test of what polling costs, not of the store)."""

    def __init__(self, store: ArtifactStore):
        self.inner, self.reads = store, []

    def get(self, key: str) -> bytes:
        self.reads.append(key)
        return self.inner.get(key)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.inner, name)


def test_reader_reads_a_finished_training_once_and_a_running_one_every_poll(store: ArtifactStore) -> None:
    write_trial(store, "run-a", "trial-0000", 3, "Succeeded")
    write_trial(store, "run-a", "trial-0001", 1, None)
    store.put("runs/run-a/trials/trial-0001/checkpoint.pt", b"not a curve")
    counting = CountingStore(store)
    reader = CurveReader(counting)  # type: ignore[arg-type]
    first = reader.run_curves("run-a")
    assert [(s["trial"], s["status"], s["metrics"]["epoch"]) for s in first["series"]] == [
        ("trial-0000", "Succeeded", [1, 2, 3]),
        ("trial-0001", "Running", [1]),
    ]
    assert first["objective"] is None and first["best"] is None  # no experiment.json: not a tuning run
    write_trial(store, "run-a", "trial-0001", 2, "EarlyStopped")
    counting.reads.clear()
    second = reader.run_curves("run-a")
    assert [(s["status"], s["early_stopped"], len(s["metrics"]["epoch"])) for s in second["series"]] == [
        ("Succeeded", False, 3),
        ("EarlyStopped", True, 2),
    ]
    trial_reads = [key for key in counting.reads if "/trials/" in key]
    assert all("trial-0001" in key for key in trial_reads)  # trial-0000 finished: not read again
    assert reader.run_curves("run-b")["series"] == []


def test_quantiles_interpolate_within_buckets_like_prometheus() -> None:
    buckets = {0.01: 50.0, 0.1: 90.0, 1.0: 100.0, float("inf"): 100.0}
    assert quantile(0.5, buckets) == 0.01
    assert abs(quantile(0.7, buckets) - 0.055) < 1e-9  # halfway through (0.01, 0.1]
    assert quantile(0.99, {0.5: 0.0, float("inf"): 10.0}) == 0.5  # past the last bound: that bound
    assert quantile(0.5, {0.5: 0.0, float("inf"): 0.0}) is None


def test_rates_come_from_deltas_and_a_reset_counter_starts_over() -> None:
    inf = float("inf")
    samples = [
        Sample(10.0, {"r": 100.0}, {}, {"r": {0.1: 100.0, inf: 100.0}}, {"r": 1.0}),
        Sample(12.0, {"r": 120.0}, {"r": 2.0}, {"r": {0.1: 110.0, inf: 120.0}}, {"r": 2.0}),
        Sample(14.0, {"r": 6.0}, {}, {"r": {0.1: 6.0, inf: 6.0}}, {"r": 1.0}),  # the gateway restarted
    ]
    p = revision_points(samples, "r")
    assert p["t"] == [12.0, 14.0]
    assert p["rps"] == [10.0, 3.0] and p["errors"] == [1.0, 0.0]
    assert p["replicas"] == [2.0, 1.0]
    assert p["p50_ms"][0] == 100.0  # half of the 20 new requests took up to 0.1 s: the bucket's bound
    assert revision_points(samples[:1], "r")["t"] == []
