"""The train step's path for a run or trial whose ``train`` options name the user's own code (``train.entrypoint``):
run it in a child process, check and measure the ONNX model made of what it returned, and answer the same
model.trained data as knflow's own training.

Outputs go where knflow's own training puts them (``runs/<runid>/[trials/<trial>/]``): metrics.jsonl (one line per
reported epoch), checkpoint-<fingerprint>.bin (the entrypoint's last checkpoint), train.log (what it printed),
model.onnx, and result.json last.
"""

from __future__ import annotations

import json
import logging
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from functions.ml.export import TOLERANCE
from functions.ml.features import Splits, Transform, read_features
from functions.ml.training import device
from functions.ml.versions import get_json
from functions.register import tensor_dicts
from functions.tuning.spec import EarlyStopping, Objective
from functions.usertrain.child import DATA, JOB, SPLITS
from functions.usertrain.code import UserCode, locate
from functions.usertrain.export import MODEL, REFERENCE
from functions.usertrain.measure import Measured, UserCodeFailed, measure
from functions.usertrain.options import EntrypointOptions, parse_entrypoint
from functions.usertrain.process import ChildOutcome, run_child
from functions.usertrain.session import ReportSession
from infra.errors import InvalidRequest, NotFound
from infra.store import ArtifactStore

if TYPE_CHECKING:
    from functions.train import Job

RESULT, LOG = "result.json", "train.log"
LOG_KEPT_BYTES = 1 << 20
Log = logging.Logger | logging.LoggerAdapter


@dataclass(frozen=True)
class Features:
    """A features version as the child gets it."""

    splits: Splits
    transform: Transform
    num_classes: int
    names: tuple[str, ...]


def run(store: ArtifactStore, job: Job, model_name: str | None, data_dir: Path, log: Log) -> dict[str, Any]:
    """Train with the user's code; → the model.trained data (stored as result.json, last). A failure of the user's
    code fails a plain run (UserCodeFailed, 422: not retried) and records a Failed trial."""
    if store.exists(job.prefix + RESULT):
        return json.loads(store.get(job.prefix + RESULT))
    try:
        options = parse_entrypoint(job.params)
        code = locate(options.code, data_dir)
    except InvalidRequest as exc:
        return _refused(store, job, job.params, exc)
    features = _features(store, job)
    session = ReportSession(store, job.runid, job.prefix, options.fingerprint(job.features["prefix"]), _rule(job), log)
    try:
        onnx_bytes, produced, measured = _train(store, job, options, code, features, session)
    except UserCodeFailed as exc:
        log.warning("train: %s %s", job.prefix, exc)
        return _refused(store, job, options.recorded(), exc)
    info = store.put(job.prefix + "model.onnx", onnx_bytes, content_type="application/onnx")
    log.info("train: %s %s → test accuracy %.4f after %d reported epochs", job.prefix, options.entrypoint,
             measured.metrics["test_accuracy"], len(session.history))  # fmt: skip
    from functions.train import store_trained  # the one shape of a trained model (train imports this module)

    lineage = {"code": {"entrypoint": options.entrypoint, "code": options.code, "origin": code.origin,
                        "returned": produced["kind"], "conversion": produced.get("conversion") or None}}  # fmt: skip
    return store_trained(
        store, job, info, model_name, stopped=session.stopped, lineage=lineage,
        metrics=_metrics(session, measured), curve=session.curve((job.objective or {}).get("metric", "val_accuracy")),
        params=options.recorded(), signature=_signature(onnx_bytes), metrics_key=session.metrics_key,
    )  # fmt: skip


def _train(
    store: ArtifactStore,
    job: Job,
    options: EntrypointOptions,
    code: UserCode,
    features: Features,
    session: ReportSession,
) -> tuple[bytes, dict[str, Any], Measured]:
    """Run the child in a scratch directory; → (ONNX bytes, its result message, the measure of the graph)."""
    with tempfile.TemporaryDirectory(prefix="knflow-train-") as tmp:
        jobdir = Path(tmp)
        session.prepare(jobdir)
        _write_job(jobdir, options, code, features)
        try:
            outcome = run_child(
                code, jobdir, session.handle, log_path=jobdir / LOG, timeout_s=options.timeout_s,
                workers=options.workers,
            )  # fmt: skip
        finally:
            _keep_log(store, job, jobdir / LOG)
        produced = _produced(outcome, options, code, jobdir / LOG)
        onnx_bytes = (jobdir / MODEL).read_bytes()
        reference = (produced["reference"], np.load(jobdir / REFERENCE)) if produced.get("reference") else None
    measured = measure(onnx_bytes, features.splits, features.num_classes, reference, TOLERANCE)
    return onnx_bytes, produced, measured


def _write_job(jobdir: Path, options: EntrypointOptions, code: UserCode, features: Features) -> None:
    """job.json and data.npz: x as float64 holding the float32 values served, so a library computes on them exactly."""
    splits, transform = features.splits, features.transform
    arrays = {f"x_{s}": splits.x[s].astype(np.float64) for s in SPLITS}
    arrays |= {f"y_{s}": splits.y[s].astype(np.int64) for s in SPLITS}
    np.savez(jobdir / DATA, **arrays)  # type: ignore[arg-type]  # numpy's stub: a key could be allow_pickle
    job = {
        "entrypoint": options.entrypoint,
        "code_dir": str(code.directory) if code.directory else None,
        "params": options.params,
        "seed": options.seed,
        "device": str(device()),
        "gpus_per_worker": options.gpus_per_worker,
        "feature_names": list(features.names),
        "num_classes": features.num_classes,
        "task": "classification",
        "kind": transform.kind,
        "mean": np.asarray(transform.mean).tolist(),
        "std": np.asarray(transform.std).tolist(),
    }
    (jobdir / JOB).write_text(json.dumps(job))


def _produced(outcome: ChildOutcome, options: EntrypointOptions, code: UserCode, log_path: Path) -> dict[str, Any]:
    """The child's result message; UserCodeFailed saying how it failed otherwise."""
    entry = options.entrypoint
    if outcome.timed_out:
        raise UserCodeFailed(f"{entry} ran past train.timeout_s ({options.timeout_s:g} s) and was stopped")
    if outcome.result is not None:
        return outcome.result
    error = outcome.error
    if error is not None:
        what = f"{error['type']}: {error['message']}".rstrip(": ")
        where = f" ({error['where']})" if error.get("where") else ""
        raise UserCodeFailed(
            {
                "import": f"cannot load {entry} from {code.origin}: {what}",
                "raised": f"{entry} raised {what}{where}",
                "returned": f"{entry}: {error['message']}",
                "export": f"{entry} returned a model knflow cannot turn into ONNX: {what}",
            }.get(error["stage"], f"{entry} failed: {what}")
        )
    status = outcome.returncode
    how = f"killed by signal {-status} ({_signal_name(-status)})" if status and status < 0 else f"exited with {status}"
    raise UserCodeFailed(f"{entry} died: {how} before returning a model{_tail(log_path)}")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown signal"


def _tail(log_path: Path) -> str:
    """The last lines the training printed, for a failure that has no other reason."""
    try:
        lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()][-3:]
    except OSError:
        return ""
    return f"; its last output: {' | '.join(lines)[-300:]}" if lines else ""


def _keep_log(store: ArtifactStore, job: Job, log_path: Path) -> None:
    if log_path.exists():
        store.put(job.prefix + LOG, log_path.read_bytes()[-LOG_KEPT_BYTES:], content_type="text/plain")


def _features(store: ArtifactStore, job: Job) -> Features:
    try:
        splits, transform, manifest = read_features(store, job.features["prefix"])
    except (KeyError, TypeError):
        raise InvalidRequest("the event's features need a prefix") from None
    except NotFound as exc:
        raise InvalidRequest(str(exc)) from None
    width = int(np.prod(transform.input_shape))
    return Features(splits, transform, int(manifest["num_classes"]), _feature_names(store, job.features, width))


def _feature_names(store: ArtifactStore, features: dict[str, Any], width: int) -> tuple[str, ...]:
    """The data set's column names; x0, x1, ... when it has none (images) or they cannot be read."""
    try:
        names = get_json(store, features["lineage"]["dataset"] + "schema.json")["features"]["names"]
    except (KeyError, TypeError, NotFound, ValueError):
        names = []
    return tuple(names) if len(names) == width else tuple(f"x{i}" for i in range(width))


def _rule(job: Job) -> tuple[Objective, EarlyStopping] | None:
    """The median stopping rule of a trial, when its experiment asks for one."""
    if not (job.objective and job.early_stopping):
        return None
    return Objective(**job.objective), EarlyStopping(**job.early_stopping)


def _metrics(session: ReportSession, measured: Measured) -> dict[str, float]:
    """The last reported values, then knflow's measure of the served graph (it wins on the names it measures)."""
    metrics = {**session.last(), **measured.metrics, "epochs": len(session.history)}
    if measured.max_abs_diff is not None:
        metrics["onnx_max_abs_diff"] = measured.max_abs_diff
    return metrics


def _signature(onnx_bytes: bytes) -> dict[str, list[dict[str, Any]]]:
    """The V2 signature the graph declares (an exported PyTorch module's is the one knflow's own models have)."""
    from serving.registry import onnx_signature

    inputs, outputs = onnx_signature(onnx_bytes)
    return {"inputs": tensor_dicts(inputs), "outputs": tensor_dicts(outputs)}


def _refused(store: ArtifactStore, job: Job, params: dict[str, Any], exc: Exception) -> dict[str, Any]:
    """A plain run fails with the error; a trial records a Failed result, so its experiment goes on."""
    if not job.trial:
        raise exc
    from functions.train import _failed, _store_result  # the one shape of a failed trial (train imports this module)

    return _store_result(store, job, _failed(job, params, str(exc)))
