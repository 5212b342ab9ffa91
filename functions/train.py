"""Train: on features.ready (mode train) or trial.requested, train a PyTorch classifier or regressor (the data set's
task), export it to ONNX with its encoding and normalization, check ONNX Runtime against PyTorch, and emit
model.trained.

Outputs go to ``runs/<runid>/`` (a plain training) or ``runs/<runid>/trials/<trial>/``: metrics.jsonl (one line per
epoch), checkpoint.pt (each epoch; a redelivered event resumes from it), model.onnx, and result.json (written last:
a redelivery after it exists re-announces the same result without training again). With ``train.workers`` > 1 the
epochs run in that many worker processes (``functions.distributed``), which leave the finished training's last
checkpoint in the store; the step then exports it as it exports its own.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import torch
from cloudevents.core.v1.event import CloudEvent

from eventing.events import new_event, runid_of
from functions.contract import FEATURES_READY, MODEL_TRAINED, TRIAL_REQUESTED, data_of
from functions.distributed.jobs import run_workers, uses_workers
from functions.ml.export import check_export, export_onnx
from functions.ml.features import Splits, Transform, read_features
from functions.ml.metrics import CLASSIFICATION, DEFAULT_OBJECTIVE, REGRESSION
from functions.ml.params import parse_params
from functions.ml.served import signature
from functions.ml.training import (
    EpochMetrics,
    TrainingDiverged,
    TrainResult,
    evaluate,
    finished,
    restore,
    state_bytes,
    state_from_bytes,
    tensors,
    train,
)
from functions.runoptions import load_options
from functions.tuning.earlystop import should_stop
from functions.tuning.experiment import EARLY_STOPPED, FAILED, SUCCEEDED, load_experiment
from functions.tuning.spec import EarlyStopping, Objective
from functions.usertrain import step as usertrain
from functions.usertrain.options import uses_entrypoint
from infra.errors import InvalidRequest, NotFound, Unavailable
from infra.settings import Settings
from infra.store import ArtifactStore, ObjectInfo
from infra.trainjob import TrainJobError

SOURCE = "/knflow/functions/train"
EPOCH_FIELDS = {f.name for f in dataclasses.fields(EpochMetrics)} - {"epoch"}
HEADLINE = {CLASSIFICATION: "test_accuracy", REGRESSION: "test_rmse"}  # the metric the log line reports
MODE = "mode"  # extension on model.trained: "train" (register takes it) or "trial" (tune takes it)


class StoreCheckpointer:
    """The last epoch's training state as one object in the store."""

    def __init__(self, store: ArtifactStore, key: str, fingerprint: str):
        self.store, self.key, self.fingerprint = store, key, fingerprint

    def load(self) -> dict[str, Any] | None:
        try:
            state = state_from_bytes(self.store.get(self.key))
        except NotFound:
            return None
        return state if state.get("fingerprint") == self.fingerprint else None  # other params: start afresh

    def save(self, state: dict[str, Any]) -> None:
        self.store.put(self.key, state_bytes({**state, "fingerprint": self.fingerprint}))


def handle(event: CloudEvent, ctx: Any) -> CloudEvent | None:
    """features.ready / trial.requested → model.trained (CPU-bound: the host runs it in a thread)."""
    data = data_of(event)
    runid = runid_of(event)
    if not runid:  # without it the model and its checkpoints would land under runs/None/
        raise InvalidRequest(f"{event.get_type()} needs the runid extension")
    options = load_options(ctx.store, runid)
    params = {**options.train, "seed": options.train.get("seed", options.seed)}
    if event.get_type() == FEATURES_READY:
        if event.get_extension(MODE) == "tune":
            return None  # tune takes it and asks for trials
        job = Job(runid, None, data, params, None, None)
    elif event.get_type() == TRIAL_REQUESTED:
        if not data.get("trial") or not isinstance(data.get("features"), dict):
            raise InvalidRequest("trial.requested needs data.trial and data.features")
        params |= data.get("params", {})
        job = Job(runid, data["trial"], data["features"], params, data.get("objective"), data.get("early_stopping"))
    else:
        return None
    if uses_entrypoint(params):  # the user's own training code (functions/usertrain)
        result = usertrain.run(ctx.store, job, options.model_name, ctx.settings.data_dir, ctx.log)
    else:
        result = run(ctx.store, job, options.model_name, ctx.log, ctx.settings)
    ext = {MODE: "trial" if job.trial else "train"}
    return new_event(
        MODEL_TRAINED, SOURCE, result, cause=event, subject=job.trial or result["features"]["dataset"], extensions=ext
    )


@dataclasses.dataclass(frozen=True)
class Job:
    """One training: of a plain run or of a trial."""

    runid: str
    trial: str | None
    features: dict[str, Any]
    params: dict[str, Any]
    objective: dict[str, Any] | None
    early_stopping: dict[str, Any] | None

    @property
    def prefix(self) -> str:
        return f"runs/{self.runid}/trials/{self.trial}/" if self.trial else f"runs/{self.runid}/"


def run(store: ArtifactStore, job: Job, model_name: str | None, log: Any, settings: Settings) -> dict[str, Any]:
    """Train (in this process, or in ``train.workers`` processes), export, check and store; returns the model.trained
    data (stored as result.json, last)."""
    if store.exists(job.prefix + "result.json"):
        return json.loads(store.get(job.prefix + "result.json"))
    try:
        params = parse_params(job.params)
    except InvalidRequest as exc:
        if not job.trial:
            raise
        return _store_result(store, job, _failed(job, job.params, str(exc)))
    splits, transform, manifest = _features(store, job)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    fingerprint = json.dumps({"features": job.features["prefix"], "params": dataclasses.asdict(params)}, sort_keys=True)
    checkpointer = StoreCheckpointer(store, job.prefix + "checkpoint.pt", fingerprint)
    task = manifest.get("task", CLASSIFICATION)
    try:
        if uses_workers(params, settings):
            model = (transform, manifest["num_classes"], task)
            trained = _distributed(store, job, params, model, checkpointer, settings)
        else:
            trained = train(
                splits, transform, manifest["num_classes"], params, task=task, checkpointer=checkpointer,
                on_epoch=epoch_hook(store, job, log),
            )  # fmt: skip
    except TrainingDiverged as exc:
        if not job.trial:
            raise InvalidRequest(f"training diverged: {exc}") from None
        return _store_result(store, job, _failed(job, params, str(exc)))
    except TrainJobError as exc:  # a trial's TrainJob failed: the trial fails, its experiment goes on
        if not job.trial:
            raise
        return _store_result(store, job, _failed(job, params, str(exc)))
    classes = tuple(manifest.get("classes", range(manifest["num_classes"])))
    metrics, info = _export(store, job, trained, splits, transform, task, classes)
    how = f"resumed after epoch {trained.resumed_from}" if trained.resumed_from else "from the first epoch"
    if uses_workers(params, settings):
        how = f"in {params.workers} workers"
    log.info("train: %s %s %.4f after %d epochs (%s)", job.prefix, HEADLINE[task], metrics[HEADLINE[task]],
             metrics["epochs"], how)  # fmt: skip
    return store_trained(
        store, job, info, model_name, stopped=trained.early_stopped,
        task=task, classes=list(classes), metrics=metrics, curve=_curve(trained.history, job, task),
        params=dataclasses.asdict(params),
        signature=signature(
            transform.input_shape, manifest["num_classes"], task=task, classes=classes, transform=transform
        ),
        metrics_key=job.prefix + "metrics.jsonl",
    )  # fmt: skip


def store_trained(
    store: ArtifactStore,
    job: Job,
    info: ObjectInfo,
    model_name: str | None,
    *,
    stopped: bool,
    lineage: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Store (as result.json) and return the model.trained data of ``job``'s model at ``info``: what every training
    answers — built-in or a user's entrypoint (``functions.usertrain``) — then its own ``fields`` and ``lineage``."""
    model_lineage = {**job.features.get("lineage", {}), "run": job.runid, "trial": job.trial, "model": info.key}
    result = {
        "trial": job.trial,
        "experiment": job.runid if job.trial else None,
        "status": EARLY_STOPPED if stopped else SUCCEEDED,
        "model_name": model_name or job.features.get("dataset"),
        "onnx_key": info.key,
        "sha256": info.sha256,
        "size": info.size,
        "features": job.features,
        "lineage": {**model_lineage, **(lineage or {})},
        **fields,
    }
    return _store_result(store, job, result)


def _distributed(
    store: ArtifactStore,
    job: Job,
    params: Any,
    model: tuple[Transform, int, str],
    checkpointer: StoreCheckpointer,
    settings: Settings,
) -> TrainResult:
    """Run the epochs in the workers (here, or as a TrainJob); → the network their last checkpoint holds."""
    if not finished(checkpointer.load(), params):
        run_workers(store, job, checkpointer.fingerprint, params, settings)
    state = checkpointer.load()
    if not finished(state, params):
        raise Unavailable(f"the workers of {job.prefix} ended before the training finished; it resumes on redelivery")
    transform, num_classes, task = model
    return restore(transform, num_classes, params, task, state)  # type: ignore[arg-type]  # finished: a state


def _features(store: ArtifactStore, job: Job) -> tuple[Splits, Transform, dict[str, Any]]:
    try:
        return read_features(store, job.features["prefix"])
    except (KeyError, TypeError):
        raise InvalidRequest("the event's features need a prefix") from None
    except NotFound as exc:
        raise InvalidRequest(str(exc)) from None


def _export(
    store: ArtifactStore,
    job: Job,
    trained: TrainResult,
    splits: Splits,
    transform: Transform,
    task: str,
    classes: tuple,
) -> tuple[dict[str, Any], Any]:
    """Test metrics, then the ONNX export checked against PyTorch on the test split, stored → (metrics, info)."""
    dev = next(trained.model.parameters()).device
    x_test, y_test = tensors(splits, transform, "test", dev)
    target = (transform.target_mean, transform.target_std)
    test = evaluate(trained.model, x_test, y_test, task, target)
    onnx = export_onnx(trained.model, transform.input_shape, task=task, classes=classes, transform=transform)
    diff = check_export(onnx, trained.model, splits.x["test"], task=task, transform=transform, c=splits.c["test"])
    info = store.put(job.prefix + "model.onnx", onnx, content_type="application/onnx")
    metrics = {
        **{f"test_{k}": v for k, v in test.items()},
        **trained.history[-1].to_dict(),
        "epochs": len(trained.history),
        "onnx_max_abs_diff": diff,
    }
    del metrics["epoch"]
    return metrics, info


def epoch_hook(store: ArtifactStore, job: Job, log: Any):
    """Per epoch: stream metrics to metrics.jsonl; for a trial, apply the median stopping rule."""
    objective = Objective(**job.objective) if job.objective else None
    if objective and objective.metric not in EPOCH_FIELDS:
        objective = None  # the rule needs a metric measured every epoch
    rule = EarlyStopping(**job.early_stopping) if job.early_stopping else None

    def on_epoch(history: list[EpochMetrics]) -> bool:
        lines = "".join(json.dumps(m.to_dict()) + "\n" for m in history)
        store.put(job.prefix + "metrics.jsonl", lines.encode(), content_type="application/x-ndjson")
        if not (objective and rule):
            return False
        experiment = load_experiment(store, job.runid)
        completed = [t.curve for t in experiment.trials.values() if t.status == SUCCEEDED] if experiment else []
        curve = [getattr(m, objective.metric) for m in history]
        if None in curve:  # a metric of the other task: nothing to judge by
            return False
        stop = should_stop(curve, completed, objective, rule)
        if stop:
            log.info("train: %s stopped early at epoch %d (median stopping rule)", job.trial, len(history))
        return stop

    return on_epoch


def _curve(history: list[EpochMetrics], job: Job, task: str) -> list[float]:
    metric = (job.objective or {}).get("metric", DEFAULT_OBJECTIVE[task])
    curve = [getattr(m, metric) for m in history] if metric in EPOCH_FIELDS else []
    return curve if None not in curve else []


def _failed(job: Job, params: Any, reason: str) -> dict[str, Any]:
    params = params if isinstance(params, dict) else dataclasses.asdict(params)
    return {
        "trial": job.trial,
        "experiment": job.runid,
        "status": FAILED,
        "reason": reason,
        "metrics": {},
        "curve": [],
        "params": params,
        "features": job.features,
    }


def _store_result(store: ArtifactStore, job: Job, result: dict[str, Any]) -> dict[str, Any]:
    store.put(job.prefix + "result.json", json.dumps(result, sort_keys=True).encode(), content_type="application/json")
    return result
