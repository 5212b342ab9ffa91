"""Retrain: on drift.detected, start a new run of the drifting model's data set — its newest raw object, with the
drifting run's options and pipeline, under a new runid — at most once per ``drift.cooldown_s`` per model.

The answer is the new run's ``data.arrived`` (so the pipeline's ingest takes it like any arrival). Each start is
claimed in the store (``drift/<model>/retrains/<n>.json``, created only if absent), so concurrent detections of one
model start one run, and a redelivered detection re-announces the run it started instead of starting another.
"""

from __future__ import annotations

import json
import time
from typing import Any

from cloudevents.core.v1.event import CloudEvent

from eventing.bindings import from_json, to_json
from eventing.events import new_event, new_runid, runid_of
from functions.contract import DATA_ARRIVED, DRIFT_DETECTED, RETRAIN_STARTED, data_of
from functions.drift import parse_policy
from functions.ml.readers import IDX_LABELS
from functions.runoptions import DATASET_OPTIONS, load_options
from infra.errors import InvalidRequest
from infra.store import ArtifactStore, ObjectInfo

SOURCE = "/knflow/functions/retrain"


def handle(event: CloudEvent, ctx: Any) -> CloudEvent | None:
    """drift.detected → emits the data.arrived of a new run and answers retrain.started within the drifting run
    (None while the model's cooldown lasts, or retraining is off)."""
    if event.get_type() != DRIFT_DETECTED:
        return None
    data = data_of(event)
    model, dataset = data.get("model"), data.get("dataset")
    if not isinstance(model, str) or not model or not isinstance(dataset, str) or not dataset:
        raise InvalidRequest(f"{DRIFT_DETECTED} needs data.model and data.dataset")
    options = load_options(ctx.store, runid_of(event))
    policy = parse_policy(options.drift)
    if not policy.retrain:
        ctx.log.info("retrain: %s drifted; the run's drift.retrain is off", model)
        return None
    claims = sorted((info.key for info in ctx.store.list(f"drift/{model}/retrains/")), key=_number)
    records = [json.loads(ctx.store.get(claim)) for claim in claims]  # one per retraining run of the model: few
    if mine := next((r for r in reversed(records) if r["cause"] == event.get_id()), None):
        return _started(event, from_json(mine["event"].encode()), ctx)  # a redelivery: the run this one started
    last = records[-1] if records else None
    if last is not None and (waited := time.time() - last["at"]) < policy.cooldown_s:
        ctx.log.info(
            "retrain: %s drifted; run %s started %.0fs ago, within the cooldown of %gs: no new run",
            model, last["runid"], waited, policy.cooldown_s,
        )  # fmt: skip
        return None
    arrival = new_run(event, newest_raw(ctx.store, dataset), options.to_dict())
    record = {"cause": event.get_id(), "at": time.time(), "runid": runid_of(arrival)}
    claim = f"drift/{model}/retrains/{_number(claims[-1]) + 1 if claims else 1:06d}.json"
    if ctx.store.put_if_absent(claim, json.dumps({**record, "event": to_json(arrival).decode()}).encode()) is None:
        ctx.log.info("retrain: %s drifted; another detection started its retraining run just now", model)
        return None
    ctx.log.info("retrain: %s drifted; run %s retrains it on %s", model, runid_of(arrival), arrival.get_subject())
    return _started(event, arrival, ctx)


def _started(detected: CloudEvent, arrival: CloudEvent, ctx: Any) -> CloudEvent:
    """Send the new run's arrival (its id is fixed, so a repeat is the same event) and say so in this run."""
    ctx.emit_sync(arrival)
    data = {"model": data_of(detected).get("model"), "runid": runid_of(arrival), "key": arrival.get_subject()}
    return new_event(RETRAIN_STARTED, SOURCE, data, cause=detected, extensions={"id": f"{detected.get_id()}/started"})


def new_run(detected: CloudEvent, newest: ObjectInfo, options: dict[str, Any]) -> CloudEvent:
    """The data.arrived that starts the retraining run: a new runid, the drifting run's pipeline and trace."""
    data = data_of(detected)
    trained_on = {(o.get("key"), o.get("sha256")) for o in (data.get("lineage") or {}).get("raw", [])}
    retrain = {
        "run": runid_of(detected),
        "model": data["model"],
        "version": data.get("version"),
        "drift": detected.get_id(),
        "new_data": (newest.key, newest.sha256) not in trained_on,
    }
    arrival = {"key": newest.key, "size": newest.size, "dataset": data["dataset"], "options": options}
    return new_event(
        DATA_ARRIVED,
        SOURCE,
        {**arrival, "retrain": retrain},
        cause=detected,
        runid=new_runid(),
        subject=newest.key,
        extensions={"id": f"{detected.get_id()}/retrain"},
    )


def newest_raw(store: ArtifactStore, dataset: str) -> ObjectInfo:
    """The data set's most recently written raw data object (not its options file, not an IDX labels half)."""
    candidates = [
        info
        for info in store.list(f"raw/{dataset}/")
        if not info.key.endswith("/" + DATASET_OPTIONS) and IDX_LABELS not in info.key.rsplit("/", 1)[-1]
    ]
    if not candidates:
        raise InvalidRequest(f"no raw data under raw/{dataset}/ to retrain on")
    return max(candidates, key=lambda info: (info.modified, info.key))


def _number(key: str) -> int:
    return int(key.rsplit("/", 1)[-1].split(".", 1)[0])
