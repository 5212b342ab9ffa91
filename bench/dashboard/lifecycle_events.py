"""Lifecycle events shaped as docs/lifecycle.md says (a tuned run, a run that starts) and the tiny ONNX model such a
run registers: the history the dashboard's benchmark (runs_api.py) and its tests build from."""

from __future__ import annotations

import numpy as np
import onnx
from cloudevents.core.v1.event import CloudEvent
from onnx import TensorProto, helper, numpy_helper

from eventing.events import new_event
from functions import contract
from serving.registry import ModelCard

SHA = "9f2c" * 16


def tiny_onnx(seed: int = 0) -> bytes:
    """A real 64 -> 10 softmax classifier (dynamic batch), small enough to build in a millisecond."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(0, 0.1, (64, 10)).astype(np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["input", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])], [w],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _features(dataset: str) -> dict:
    return {
        "dataset": dataset, "dataset_version": SHA, "version": SHA, "prefix": f"features/{dataset}/{SHA}/",
        "splits_key": f"features/{dataset}/{SHA}/splits.npz", "transform_key": "t", "stats_key": "s",
        "kind": "tabular", "input_shape": [64], "num_classes": 10, "rows": {"train": 1257, "val": 270, "test": 270},
        "lineage": {"raw": [], "dataset": f"datasets/{dataset}/{SHA}/", "features": f"features/{dataset}/{SHA}/"},
    }  # fmt: skip


def start_of_run(dataset: str, mode: str, runid: str | None = None) -> list[CloudEvent]:
    """data.arrived -> dataset.ingested -> features.ready (mode train|tune)."""
    arrived = new_event(
        contract.DATA_ARRIVED,
        "/knflow/sources/filestore",
        {"bucket": "knflow", "key": f"raw/{dataset}/d.csv", "size": 9120},
        runid=runid,
    )
    ingested = new_event(
        contract.DATASET_INGESTED, "/knflow/functions/ingest",
        {"dataset": dataset, "version": SHA, "prefix": f"datasets/{dataset}/{SHA}/", "rows": 1797,
         "num_classes": 10, "kind": "tabular"},
        cause=arrived,
    )  # fmt: skip
    ready = new_event(
        contract.FEATURES_READY,
        "/knflow/functions/featurize",
        _features(dataset),
        cause=ingested,
        extensions={"mode": mode},
    )
    return [arrived, ingested, ready]


def trained(cause: CloudEvent, trial: str, accuracy: float, lr: float) -> tuple[CloudEvent, CloudEvent]:
    """One trial: its request and its model.trained answer."""
    runid = cause.get_extension("runid")
    request = new_event(
        contract.TRIAL_REQUESTED, "/knflow/functions/tune",
        {"experiment": runid, "trial": trial, "params": {"lr": lr}, "features": cause.get_data(),
         "objective": {"metric": "val_accuracy", "type": "maximize"}, "early_stopping": None},
        cause=cause, subject=trial, extensions={"mode": "trial"},
    )  # fmt: skip
    request = _with_id(request, f"{runid}.{trial}")
    result = new_event(
        contract.MODEL_TRAINED, "/knflow/functions/train",
        {"trial": trial, "experiment": runid, "status": "Succeeded", "model_name": "digits",
         "onnx_key": f"runs/{runid}/trials/{trial}/model.onnx", "sha256": SHA, "size": 1000,
         "metrics": {"val_accuracy": accuracy, "test_accuracy": accuracy - 0.01}, "curve": [accuracy],
         "params": {"lr": lr}},
        cause=request, extensions={"mode": "trial"},
    )  # fmt: skip
    return request, result


def _with_id(event: CloudEvent, event_id: str) -> CloudEvent:
    return CloudEvent({**event.get_attributes(), "id": event_id}, event.get_data())


def tuned_run(runid: str, card: ModelCard, endpoint: str) -> list[CloudEvent]:
    """A whole tuned run to model.deployed: two trials, the best registered as ``card`` and deployed."""
    events = start_of_run("digits", "tune", runid)
    ready = events[-1]
    trials = [trained(ready, "trial-0000", 0.91, 0.01), trained(ready, "trial-0001", 0.96, 0.003)]
    events += [trials[0][0], trials[1][0], trials[0][1], trials[1][1]]
    completed = new_event(
        contract.TUNE_COMPLETED, "/knflow/functions/tune",
        {"experiment": ready.get_extension("runid"), "best_trial": "trial-0001",
         "objective": {"metric": "val_accuracy", "type": "maximize", "value": 0.96}, "params": {"lr": 0.003},
         "reason": "trial budget spent", "model": trials[1][1].get_data(),
         "trials": [{"trial": "trial-0000", "status": "Succeeded", "value": 0.91, "params": {"lr": 0.01}},
                    {"trial": "trial-0001", "status": "Succeeded", "value": 0.96, "params": {"lr": 0.003}}]},
        cause=trials[1][1], subject="trial-0001",
    )  # fmt: skip
    registered = new_event(
        contract.MODEL_REGISTERED, "/knflow/functions/register",
        {"name": card.name, "version": card.version, "sha256": card.sha256, "size": card.size,
         "onnx_key": card.onnx_key, "metrics": card.metrics, "params": card.params, "lineage": card.lineage},
        cause=completed, subject=f"{card.name}/{card.version}",
    )  # fmt: skip
    deployed = new_event(
        contract.MODEL_DEPLOYED, "/knflow/functions/deploy",
        {"name": card.name, "version": card.version, "decision": "no production version", "revision": "digits-00001",
         "traffic_percent": 100, "canary": False, "endpoint": endpoint},
        cause=registered, subject=f"{card.name}/{card.version}",
    )  # fmt: skip
    return [*events, completed, registered, deployed]
