"""Drift: on each logged inference request of a model (KServe's ``inference.request`` events from the gateway), add
its rows to a window of that model version's inputs kept in the artifact store; when the window is full, score each
feature against the training split of the version's features (population stability index, functions.ml.drift) and
emit ``drift.detected`` with the per-feature scores if one reaches the run's threshold. At most once per window;
idempotent on the request event's id (a redelivered request is not counted twice, its detection is re-announced).
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from cloudevents.core.v1.event import CloudEvent

from eventing.bindings import from_json, to_json
from eventing.events import new_event, runid_of
from functions.contract import DRIFT_DETECTED, INFERENCE_REQUEST
from functions.ml.drift import Reference, reference, scores
from functions.ml.features import read_features
from functions.register import open_registry
from functions.runoptions import load_options
from infra.errors import InvalidRequest, NotFound
from infra.store import ArtifactStore
from serving.protocol import parse_request

SOURCE = "/knflow/functions/drift"
MODEL, VERSION, REVISION = "inferenceservicename", "modelversion", "revision"  # the logger's extensions


@dataclass(frozen=True)
class DriftPolicy:
    """Run options ``drift``: when a window of inputs drifts, how big a window is, and what drift starts."""

    threshold: float = 0.2  # a feature drifts when its PSI reaches this (0.2: the conventional "significant")
    window: int = 500  # rows per window
    cooldown_s: float = 3600.0  # at most one retraining run per model in this time
    retrain: bool = True  # whether drift.detected starts a retraining run (functions/retrain.py)


def parse_policy(raw: dict[str, Any] | None) -> DriftPolicy:
    """A drift policy from run options; unknown fields or out-of-range values raise InvalidRequest."""
    if raw is not None and not isinstance(raw, dict):
        raise InvalidRequest(f"drift options must be an object, got {type(raw).__name__}")
    known = {f.name for f in dataclasses.fields(DriftPolicy)}
    unknown = sorted(set(raw or {}) - known)
    if unknown:
        raise InvalidRequest(f"unknown drift options {unknown} (known: {sorted(known)})")
    try:
        policy = DriftPolicy(**(raw or {}))
        ok = policy.threshold > 0 and 10 <= policy.window <= 100_000 and policy.cooldown_s >= 0
        ok = ok and isinstance(policy.retrain, bool) and isinstance(policy.window, int)
    except TypeError as exc:
        raise InvalidRequest(f"bad drift options ({exc})") from None
    if not ok:
        raise InvalidRequest(f"bad drift options {policy}: threshold > 0, window 10..100000, cooldown_s >= 0")
    return policy


def handle(event: CloudEvent, ctx: Any) -> CloudEvent | None:
    """inference.request → drift.detected when the window this request fills has drifted, else None."""
    if event.get_type() != INFERENCE_REQUEST:
        return None
    model, version = event.get_extension(MODEL), str(event.get_extension(VERSION) or "")
    if not model or not version.isdigit():
        raise InvalidRequest(f"{INFERENCE_REQUEST} needs the {MODEL} and {VERSION} extensions (knflow's logger)")
    policy = parse_policy(load_options(ctx.store, runid_of(event)).drift)
    window = Window.load(ctx.store, model, int(version))
    if window is None:
        try:
            window = Window.start(ctx.store, model, int(version))
        except NotFound as exc:
            ctx.log.info("drift: %s/%s is not monitored: %s", model, version, exc)
            return None
    if event.get_id() in window.seen:
        return window.announced(event.get_id())  # a redelivery: counted once, its detection (if any) re-announced
    rows = request_rows(event.get_data(), window.features)
    if rows is None:
        ctx.log.info("drift: %s/%s: request %s has no rows of %d numbers; skipped", model, version, event.get_id(),
                     window.features)  # fmt: skip
        return None
    full = window.add(event.get_id(), rows, policy.window)
    detected = None
    if full is not None:
        detected = _judge(ctx.store, window, full, policy, event)
        assert window.closed is not None, "judging a full window closes it"
        ctx.log.info("drift: %s/%s window %d: %s", model, version, window.index - 1, window.closed["summary"])
    window.save(ctx.store)
    return detected


def request_rows(data: Any, features: int) -> np.ndarray | None:
    """The rows of a V2 JSON request with one numeric input, flattened per row; None when it has no such rows."""
    if isinstance(data, bytes | bytearray):
        try:
            data = orjson.loads(data)  # a JSON body that came with another content type
        except orjson.JSONDecodeError:
            return None  # e.g. the binary tensor extension: not read here yet
    request = parse_request(orjson.dumps(data))
    if len(request.inputs) != 1:
        return None
    (array,) = request.inputs.values()
    if array.dtype.kind not in "biuf" or array.ndim == 0 or len(array) == 0:
        return None
    rows = array.reshape(len(array), -1).astype(np.float32)
    return rows if rows.shape[1] == features else None


def _judge(store: ArtifactStore, window: Window, rows: np.ndarray, policy: DriftPolicy, cause: CloudEvent) -> Any:
    """Score a full window; the drift.detected event when a feature reaches the threshold (kept for redelivery)."""
    ref, names = training_reference(store, window.lineage)
    per_feature = scores(ref, rows)
    drifted = [int(j) for j in np.argsort(-per_feature) if per_feature[j] >= policy.threshold]
    index = window.index - 1
    summary = f"max PSI {per_feature.max():.3g} ({names[int(per_feature.argmax())]}), {len(drifted)} drifted"
    event = None
    if drifted:
        data = {
            "model": window.model,
            "version": window.version,
            "revision": cause.get_extension(REVISION),
            "measure": "psi",
            "threshold": policy.threshold,
            "score": round(float(per_feature.max()), 6),
            "drifted": [names[j] for j in drifted],
            "scores": {name: round(float(s), 6) for name, s in zip(names, per_feature, strict=True)},
            "window": {"index": index, "rows": len(rows), "requests": len(window.previous)},
            "dataset": window.lineage.get("dataset_name"),
            "lineage": window.lineage,
        }
        subject = f"{window.model}/{window.version}"
        event_id = f"{subject}/window-{index}/{cause.get_id()}"
        event = new_event(DRIFT_DETECTED, SOURCE, data, cause=cause, subject=subject, extensions={"id": event_id})
    kept = to_json(event).decode() if event is not None else None
    window.closed = {"index": index, "by": cause.get_id(), "summary": summary, "event": kept}
    return event


def training_reference(store: ArtifactStore, lineage: dict[str, Any]) -> tuple[Reference, list[str]]:
    """The training split's histogram featurize stored (computed from the split for versions older than it) and
    a name per feature (the data set's column names, ``[r,c]`` for images, else the index)."""
    prefix = lineage["features"]
    stats = json.loads(store.get(prefix + "stats.json"))
    if "histogram" in stats:
        ref = Reference.from_dict(stats["histogram"])
    else:
        splits, _transform, _summary = read_features(store, prefix)
        ref = reference(splits.x["train"])
    return ref, feature_names(store, lineage, ref.features)


def feature_names(store: ArtifactStore, lineage: dict[str, Any], count: int) -> list[str]:
    try:
        schema = json.loads(store.get(lineage["dataset"] + "schema.json"))["features"]
    except (NotFound, KeyError, TypeError, ValueError):
        return [str(j) for j in range(count)]
    names = list(schema.get("names") or ())
    shape = [d for d in schema.get("shape", [])[1:]]
    if len(names) == count:
        return [str(n) for n in names]
    if len(shape) == 2 and shape[0] * shape[1] == count:
        return [f"[{r},{c}]" for r in range(shape[0]) for c in range(shape[1])]
    return [str(j) for j in range(count)]


@dataclass
class Window:
    """The open window of one model version's inputs (``drift/<model>/<version>/window.npz``): its rows, the ids
    of the requests in it and in the window before (redeliveries), and the last closed window's outcome."""

    model: str
    version: int
    features: int
    lineage: dict[str, Any]
    index: int = 0
    rows: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    ids: list[str] = field(default_factory=list)
    previous: list[str] = field(default_factory=list)
    closed: dict[str, Any] | None = None

    @staticmethod
    def key(model: str, version: int) -> str:
        return f"drift/{model}/{version}/window.npz"

    @classmethod
    def start(cls, store: ArtifactStore, model: str, version: int) -> Window:
        """A model version's first window; NotFound unless its card names the features it was trained on."""
        lineage = dict(open_registry(store).get(model, version).lineage)
        prefix = lineage.get("features")
        if not prefix:
            raise NotFound("its model card names no features version (not trained by the lifecycle)")
        stats = json.loads(store.get(prefix + "stats.json"))
        features = len(stats["features"]["mean"])
        keep = {k: lineage[k] for k in ("raw", "dataset", "features", "run") if k in lineage}
        keep["dataset_name"] = str(lineage.get("dataset", "")).split("/")[1] if lineage.get("dataset") else None
        return cls(model, version, features, keep, rows=np.zeros((0, features), np.float32))

    @classmethod
    def load(cls, store: ArtifactStore, model: str, version: int) -> Window | None:
        try:
            blob = store.get(cls.key(model, version))
        except NotFound:
            return None
        with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
            meta, rows = json.loads(str(archive["meta"])), archive["rows"]
        return cls(model, version, rows=rows, **meta)

    def save(self, store: ArtifactStore) -> None:
        meta = {k: getattr(self, k) for k in ("features", "lineage", "index", "ids", "previous", "closed")}
        buffer = io.BytesIO()
        np.savez(buffer, rows=self.rows, meta=np.array(json.dumps(meta)))
        store.put(self.key(self.model, self.version), buffer.getvalue())

    @property
    def seen(self) -> set[str]:
        return {*self.ids, *self.previous}

    def add(self, event_id: str, rows: np.ndarray, size: int) -> np.ndarray | None:
        """Add a request's rows; the full window's rows when they fill it (what is left over opens the next)."""
        self.ids.append(event_id)
        self.rows = np.concatenate([self.rows, rows])
        if len(self.rows) < size:
            return None
        full, self.rows = self.rows[:size], self.rows[size:][: size - 1]
        self.previous, self.ids, self.index = self.ids, [], self.index + 1
        return full

    def announced(self, event_id: str) -> CloudEvent | None:
        """What this request's first delivery answered: the detection it closed a window with, or nothing."""
        if self.closed and self.closed["by"] == event_id and self.closed["event"]:
            return from_json(self.closed["event"].encode())
        return None
