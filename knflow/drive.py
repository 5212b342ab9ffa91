"""Drive one lifecycle run from outside, events only: drop a file into ``raw/``, follow the run, probe the model.

What ``knflow demo``, ``knflow run FILE`` and the end-to-end test share. Nothing here calls a
function directly: the file lands in the store, the broker announces it, and the rest is events.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import urllib3

from eventing.events import STEP_FAILED
from functions.contract import FEATURES_READY, MODEL_DEPLOYED, MODEL_REGISTERED, TUNE_COMPLETED
from functions.deploy import DECLINED
from functions.runoptions import DATASET_OPTIONS
from infra.errors import Unavailable
from infra.store import ArtifactStore
from knflow.follow import History, SeenEvent
from serving.registry import ModelRegistry


@dataclass
class RunOutcome:
    """What a run did, read from its events."""

    runid: str
    key: str
    events: list[SeenEvent] = field(default_factory=list)
    declined: str | None = None  # why deploy kept the production version, when it did

    def last(self, type_: str) -> SeenEvent | None:
        return next((e for e in reversed(self.events) if e.type == type_), None)

    def data(self, type_: str) -> dict[str, Any] | None:
        """The data of the last event of ``type_``, if there was one."""
        event = self.last(type_)
        return event.data if event else None

    @property
    def failure(self) -> SeenEvent | None:
        return self.last(STEP_FAILED)

    @property
    def deployed(self) -> dict[str, Any] | None:
        return self.data(MODEL_DEPLOYED)

    @property
    def registered(self) -> dict[str, Any] | None:
        return self.data(MODEL_REGISTERED)

    @property
    def tuning(self) -> dict[str, Any] | None:
        return self.data(TUNE_COMPLETED)

    @property
    def features(self) -> dict[str, Any] | None:
        return self.data(FEATURES_READY)

    def phases(self) -> list[tuple[str, float]]:
        """(step, seconds) between the milestones of the run, in order."""
        marks = [
            ("arrived", "dev.knflow.data.arrived"),
            ("ingest", "dev.knflow.dataset.ingested"),
            ("featurize", FEATURES_READY),
            ("train + tune", None),
            ("register", MODEL_REGISTERED),
            ("deploy", MODEL_DEPLOYED),
        ]
        trained = self.last(TUNE_COMPLETED) or self.last("dev.knflow.model.trained")
        times: list[tuple[str, float]] = []
        for step, type_ in marks:
            event = trained if type_ is None else next((e for e in self.events if e.type == type_), None)
            if event is not None:
                times.append((step, event.time.timestamp()))
        return [(step, t - times[i][1]) for i, (step, t) in enumerate(times[1:])]


def submit(store: ArtifactStore, dataset: str, filename: str, payload: bytes, options: dict | None) -> str:
    """Put the run options (if any) and then the data under ``raw/<dataset>/``; returns the data's key."""
    if options is not None:
        store.put(f"raw/{dataset}/{DATASET_OPTIONS}", orjson.dumps(options), content_type="application/json")
    key = f"raw/{dataset}/{filename}"
    store.put(key, payload)
    return key


#: After model.registered, how long to wait for model.deployed before taking it that the deployment
#: policy chose not to deploy (deploy then answers no event).
DEPLOY_GRACE_S = 30.0


def watch(
    history: History,
    key: str,
    *,
    timeout: float,
    store: ArtifactStore | None = None,
    on_event: Callable[[SeenEvent], None] = lambda _e: None,
) -> RunOutcome:
    """Wait for the run that ``key``'s arrival starts and follow it to deployed, failed, or not deployed.

    Deploy answers no event when its policy keeps the current production version; with ``store``,
    the registry's audit trail tells that at once, else the watcher gives deploy ``DEPLOY_GRACE_S``.
    """
    arrival = history.find_arrival(key, timeout=min(timeout, 60.0))
    outcome = RunOutcome(runid=arrival.extensions["runid"], key=key)
    deadline, after = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        events, after = history.page(runid=outcome.runid, after=after, wait=1.0)
        for event in events:
            outcome.events.append(event)
            on_event(event)
            if event.type in (MODEL_DEPLOYED, STEP_FAILED):
                return outcome
            if event.type == MODEL_REGISTERED:
                deadline = min(deadline, time.monotonic() + DEPLOY_GRACE_S)
        if outcome.registered and store is not None:
            outcome.declined = _declined(store, outcome.registered)
            if outcome.declined:
                return outcome
    if outcome.registered is None:
        raise Unavailable(f"run {outcome.runid} did not finish within {timeout:.0f}s")
    return outcome


def _declined(store: ArtifactStore, registered: dict[str, Any]) -> str | None:
    """Why deploy declined this registered version, if its audit trail says it did."""
    records = ModelRegistry(store).audit(registered["name"])
    return next(
        (r["reason"] for r in records if r["action"] == DECLINED and r["version"] == registered["version"]), None
    )


@dataclass(frozen=True)
class Probe:
    """Inference calls against the deployed endpoint."""

    cold_start_s: float
    replicas_before: int
    requests: int
    correct: int
    p50_ms: float
    p99_ms: float

    @property
    def accuracy(self) -> float:
        return self.correct / self.requests if self.requests else 0.0


def probe(gateway_url: str, model: str, x: np.ndarray, y: np.ndarray, *, requests: int = 200) -> Probe:
    """Time the first call (from zero replicas when the model is idle), then ``requests`` single-row calls."""
    http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5.0, read=60.0))
    status = orjson.loads(http.request("GET", f"{gateway_url}/v1/models/{model}").data)
    replicas = sum(int(r.get("replicas", 0)) for r in status.get("revisions", []))
    url = f"{gateway_url}/v2/models/{model}/infer"
    latencies, correct = [], 0
    n = min(requests, len(y))
    for i in range(n):
        row = x[i : i + 1].astype(np.float32)
        body = orjson.dumps(
            {
                "id": f"probe-{i}",
                "inputs": [
                    {"name": "input", "datatype": "FP32", "shape": list(row.shape), "data": row.reshape(-1).tolist()}
                ],
            }
        )
        start = time.perf_counter()
        answer = http.request("POST", url, body=body, headers={"content-type": "application/json"})
        latencies.append(time.perf_counter() - start)
        if answer.status != 200:
            raise Unavailable(f"inference answered {answer.status}: {answer.data[:200]!r}")
        correct += int(predicted_class(orjson.loads(answer.data)["outputs"]) == int(y[i]))
    rest = sorted(latencies[1:]) or latencies
    return Probe(
        cold_start_s=latencies[0],
        replicas_before=replicas,
        requests=n,
        correct=correct,
        p50_ms=statistics.median(rest) * 1e3,
        p99_ms=rest[min(len(rest) - 1, int(len(rest) * 0.99))] * 1e3,
    )


def predicted_class(outputs: list[dict[str, Any]]) -> int:
    """The class index a one-row V2 answer gives: the argmax of its ``probabilities`` (a converted scikit-learn model
    answers ``label`` first), else of its first output."""
    by_name = {o["name"]: o for o in outputs}
    return int(np.argmax((by_name.get("probabilities") or outputs[0])["data"]))


def held_out_split(store: ArtifactStore, features: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The held-out test split of the run's features version (raw inputs, as a client would send them)."""
    with np.load(io.BytesIO(store.get(features["splits_key"]))) as splits:
        return splits["x_test"], splits["y_test"]
