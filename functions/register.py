"""Register: put a trained model into the model registry and emit model.registered.

It takes a plain training's model.trained, or tune.completed (the best trial); a trial's own model.trained
(``mode`` extension "trial", or data.trial set) is tune's business and is never registered.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from cloudevents.core.v1.event import CloudEvent

from eventing.events import new_event, runid_of
from functions.contract import MODEL_REGISTERED, MODEL_TRAINED, TUNE_COMPLETED, data_of
from functions.runoptions import load_options
from infra.errors import IntegrityError, InvalidRequest
from infra.store import ArtifactStore

SOURCE = "/knflow/functions/register"


def open_registry(store: ArtifactStore) -> Any:
    """The model registry over the artifact store (serving.registry; imported here so the call sites stay few)."""
    from serving.registry import ModelRegistry

    return ModelRegistry(store)


def handle(event: CloudEvent, ctx: Any) -> CloudEvent | None:
    """model.trained (not a trial) or tune.completed → model.registered."""
    data = data_of(event)
    tuning: dict[str, Any] = {}
    if event.get_type() == MODEL_TRAINED:
        if data.get("trial") or event.get_extension("mode") == "trial":
            return None  # a trial's model: tune decides which one is registered
        model = data
    elif event.get_type() == TUNE_COMPLETED:
        model = data.get("model") or {}
        tuning = {
            "experiment": data.get("experiment"),
            "best_trial": data.get("best_trial"),
            "objective": data.get("objective"),
        }
    else:
        return None
    for field in ("onnx_key", "sha256", "signature"):
        if not model.get(field):
            raise InvalidRequest(f"{event.get_type()}: the model has no {field}")
    runid = runid_of(event)
    name = load_options(ctx.store, runid).model_name or model.get("model_name") or "model"
    card = register_model(ctx.store, name, model, tuning, idempotency_key=f"{runid}:{model['sha256']}")
    ctx.log.info("register: %s version %s (sha256 %s)", card.name, card.version, card.sha256[:12])
    out = {
        "name": card.name,
        "version": card.version,
        "sha256": card.sha256,
        "size": card.size,
        "onnx_key": card.onnx_key,
        "metrics": card.metrics,
        "params": card.params,
        "signature": {"inputs": tensor_dicts(card.inputs), "outputs": tensor_dicts(card.outputs)},
        "task": card.task,
        "classes": list(card.classes),
        "lineage": card.lineage,
    }
    return new_event(MODEL_REGISTERED, SOURCE, out, cause=event, subject=f"{card.name}/{card.version}")


def register_model(
    store: ArtifactStore, name: str, model: dict[str, Any], tuning: dict[str, Any], *, idempotency_key: str
) -> Any:
    """Check the ONNX bytes against the sha256 the trainer announced, then register them with their lineage."""
    onnx = store.get(model["onnx_key"])
    if hashlib.sha256(onnx).hexdigest() != model["sha256"]:
        raise IntegrityError(f"{model['onnx_key']}: its sha256 is not the one model.trained announced")
    lineage = {**model.get("lineage", {}), **({"tuning": tuning} if tuning else {})}
    return open_registry(store).register(
        name,
        onnx,
        inputs=model["signature"]["inputs"],
        outputs=model["signature"]["outputs"],
        metrics=model.get("metrics", {}),
        params=model.get("params", {}),
        lineage=lineage,
        idempotency_key=idempotency_key,
        task=model.get("task", ""),
        classes=model.get("classes", ()),
    )


def tensor_dicts(specs: Iterable[Any]) -> list[dict[str, Any]]:
    """The card's tensor specs (the registry's TensorSpec, or mappings) as JSON-ready dicts."""
    return [
        dict(t) if isinstance(t, Mapping) else {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
        for t in specs
    ]
