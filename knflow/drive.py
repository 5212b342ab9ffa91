"""Drive one lifecycle run from outside, events only: drop a file into ``raw/``, follow the run, probe the model.

What ``knflow run FILE`` and the end-to-end tests share. Nothing here calls a function directly: the file lands
in the store, the store's arrival source announces it, and the rest is events. (``knflow.Client`` submits
through the knflow server instead, which announces the data itself with the run options in the event.)
"""

from __future__ import annotations

import io
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import urllib3

from functions.deploy import DECLINED
from functions.ml.served import INPUT, v2_inputs
from functions.runoptions import DATASET_OPTIONS
from infra.httpclient import JsonClient
from infra.store import ArtifactStore
from knflow.follow import History, SeenEvent
from knflow.outcome import RunOutcome, follow
from serving.registry import ModelRegistry


def submit(store: ArtifactStore, dataset: str, filename: str, payload: bytes, options: dict | None) -> str:
    """Put data under ``raw/<dataset>/`` as any other tool would (its arrival comes from the store's arrival
    source), after the data set's options file when ``options`` are given; returns the data's key."""
    if options is not None:
        store.put(f"raw/{dataset}/{DATASET_OPTIONS}", orjson.dumps(options), content_type="application/json")
    key = f"raw/{dataset}/{filename}"
    store.put(key, payload)
    return key


def watch(
    history: History,
    key: str,
    *,
    timeout: float,
    store: ArtifactStore | None = None,
    on_event: Callable[[SeenEvent], None] = lambda _e: None,
) -> RunOutcome:
    """Wait for the run that ``key``'s arrival starts and follow it to deployed, failed, or not deployed.

    With ``store``, the registry's audit trail tells at once that deploy declined (else it gets its grace).
    """
    arrival = history.find_arrival(key, timeout=min(timeout, 60.0))
    outcome = RunOutcome(runid=arrival.extensions["runid"], key=key)

    def pages(after: str | None, wait: float) -> tuple[list[SeenEvent], str | None]:
        return history.page(runid=outcome.runid, after=after, wait=wait)

    for event in follow(pages, outcome, timeout=timeout, declined=lambda r: declined(store, r) if store else None):
        on_event(event)
    return outcome


def declined(store: ArtifactStore, registered: dict[str, Any]) -> str | None:
    """Why deploy declined this registered version, if its audit trail says it did."""
    records = ModelRegistry(store).audit(registered["name"])
    return next(
        (r["reason"] for r in records if r["action"] == DECLINED and r["version"] == registered["version"]), None
    )


@dataclass(frozen=True)
class Probe:
    """Inference calls against the deployed endpoint: how fast, and how right (the label, or the prediction)."""

    cold_start_s: float
    replicas_before: int
    requests: int
    correct: int
    p50_ms: float
    p99_ms: float
    answers: tuple = ()  # per row: the label the model answered, or its prediction (regression)
    squared_error: float = 0.0  # regression: the sum over the rows

    @property
    def accuracy(self) -> float:
        return self.correct / self.requests if self.requests else 0.0

    @property
    def rmse(self) -> float:
        return math.sqrt(self.squared_error / self.requests) if self.requests else 0.0


def probe(
    gateway_url: str,
    model: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    requests: int = 200,
    c: np.ndarray | None = None,
    registered: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Probe:
    """Time the first call (from zero replicas when the model is idle), then ``requests`` single-row calls.

    Rows are sent as the model's signature asks (``registered``, the model.registered data: one tensor ``input``, or
    one per column with categories ``c`` as BYTES) and scored by its ``label`` or ``prediction`` output. ``headers``:
    the caller's credentials (the gateway's control API asks for them).
    """
    gateway = JsonClient(gateway_url, urllib3.Timeout(connect=5.0, read=60.0), headers, name="gateway")
    status = gateway.call("GET", f"/v1/models/{model}")
    replicas = sum(int(r.get("replicas", 0)) for r in status.get("revisions", []))
    path = f"/v2/models/{model}/infer"
    specs = ((registered or {}).get("signature") or {}).get("inputs") or [{"name": INPUT, "datatype": "FP32"}]
    classes = (registered or {}).get("classes") or []
    latencies, answers, correct, squared = [], [], 0, 0.0
    n = min(requests, len(y))
    for i in range(n):
        inputs = v2_inputs(specs, x[i : i + 1], None if c is None else c[i : i + 1])
        seconds, outputs = _infer(gateway, path, {"id": f"probe-{i}", "inputs": inputs})
        latencies.append(seconds)
        answers.append(_answer(outputs))
        if "prediction" in outputs:
            squared += (answers[-1] - float(y[i])) ** 2
        else:
            correct += int(answers[-1] == (classes[int(y[i])] if classes else int(y[i])))
    rest = sorted(latencies[1:]) or latencies
    return Probe(
        cold_start_s=latencies[0],
        replicas_before=replicas,
        requests=n,
        correct=correct,
        p50_ms=statistics.median(rest) * 1e3,
        p99_ms=rest[min(len(rest) - 1, int(len(rest) * 0.99))] * 1e3,
        answers=tuple(answers),
        squared_error=squared,
    )


def _infer(gateway: JsonClient, path: str, request: dict[str, Any]) -> tuple[float, dict[str, list]]:
    """One V2 inference call → (seconds, output data by name)."""
    start = time.perf_counter()
    answer = gateway.call("POST", path, request)
    seconds = time.perf_counter() - start
    return seconds, {o["name"]: o["data"] for o in answer["outputs"]}


def _answer(outputs: dict[str, list]) -> Any:
    """What one row's answer says: the prediction, the label, or (a model with neither) the top class's index."""
    if "prediction" in outputs:
        return float(outputs["prediction"][0])
    if "label" in outputs:
        return outputs["label"][0]
    return int(np.argmax(next(iter(outputs.values()))))


def held_out_split(store: ArtifactStore, features: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The held-out test split of the run's features version (raw inputs, as a client would send them)."""
    with np.load(io.BytesIO(store.get(features["splits_key"]))) as splits:
        return splits["x_test"], splits["y_test"]


def held_out_categories(store: ArtifactStore, features: dict[str, Any]) -> np.ndarray | None:
    """The categorical columns of the held-out test split (rows by columns of str), or None when it has none."""
    with np.load(io.BytesIO(store.get(features["splits_key"]))) as splits:
        return splits["c_test"] if "c_test" in splits.files else None
