"""Register: a plain training's model and tune's best trial are registered once each; a trial's own model never."""

from __future__ import annotations

import pytest

from eventing.events import new_event
from functions import register
from functions.contract import MODEL_REGISTERED, MODEL_TRAINED, TUNE_COMPLETED
from infra.errors import IntegrityError, InvalidRequest
from tests.lifecycle.helpers import MemoryRegistry, StepContext


@pytest.fixture
def registry(monkeypatch):
    reg = MemoryRegistry()
    monkeypatch.setattr(register, "open_registry", lambda store: reg)
    return reg


def _model(ctx, key="runs/r1/model.onnx", trial=None):
    info = ctx.store.put(key, b"onnx-bytes-" + key.encode())
    return {
        "trial": trial,
        "status": "Succeeded",
        "model_name": "digits",
        "onnx_key": key,
        "sha256": info.sha256,
        "metrics": {"test_accuracy": 0.98},
        "params": {"lr": 0.003},
        "signature": {
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}],
            "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}],
        },
        "lineage": {
            "raw": [{"key": "raw/digits/d.csv"}],
            "dataset": "datasets/digits/a/",
            "features": "features/digits/b/",
            "run": "r1",
            "trial": trial,
            "model": key,
        },
    }


def test_plain_training_is_registered_with_lineage(ctx, registry):
    event = new_event(MODEL_TRAINED, "/t", _model(ctx), extensions={"mode": "train"})
    out = register.handle(event, ctx)
    assert out.get_type() == MODEL_REGISTERED
    data = out.get_data()
    assert (data["name"], data["version"]) == ("digits", 1)
    assert data["lineage"]["dataset"] == "datasets/digits/a/" and data["lineage"]["raw"][0]["key"] == "raw/digits/d.csv"
    assert data["signature"]["inputs"][0]["shape"] == [-1, 64] and data["metrics"]["test_accuracy"] == 0.98
    assert out.get_extension("runid") == event.get_extension("runid")


def test_redelivered_event_registers_once(ctx, registry):
    event = new_event(MODEL_TRAINED, "/t", _model(ctx), extensions={"mode": "train"})
    first = register.handle(event, ctx).get_data()
    second = register.handle(event, ctx).get_data()
    assert first["version"] == second["version"] == 1
    assert len(registry.cards["digits"]) == 1


def test_a_trials_model_is_not_registered(ctx, registry):
    by_data = new_event(MODEL_TRAINED, "/t", _model(ctx, "runs/r1/trials/trial-0001/model.onnx", trial="trial-0001"))
    by_mode = new_event(MODEL_TRAINED, "/t", _model(ctx), extensions={"mode": "trial"})
    assert register.handle(by_data, ctx) is None and register.handle(by_mode, ctx) is None
    assert registry.calls == 0


def test_tune_completed_registers_the_best_trial(ctx, registry):
    best = _model(ctx, "runs/r1/trials/trial-0002/model.onnx", trial="trial-0002")
    data = {
        "experiment": "r1",
        "best_trial": "trial-0002",
        "objective": {"metric": "val_accuracy", "value": 0.99},
        "model": best,
    }
    out = register.handle(new_event(TUNE_COMPLETED, "/t", data), ctx).get_data()
    assert out["lineage"]["trial"] == "trial-0002" and out["lineage"]["tuning"]["best_trial"] == "trial-0002"
    assert registry.cards["digits"][0].sha256 == best["sha256"]


def test_model_bytes_that_do_not_match_the_announced_sha_are_refused(ctx, registry):
    model = {**_model(ctx), "sha256": "0" * 64}
    with pytest.raises(IntegrityError):
        register.handle(new_event(MODEL_TRAINED, "/t", model), ctx)
    assert registry.calls == 0


def test_an_event_without_a_model_is_refused(ctx, registry):
    with pytest.raises(InvalidRequest, match="onnx_key"):
        register.handle(new_event(TUNE_COMPLETED, "/t", {"best_trial": "x"}), ctx)


class WentDown(BaseException):
    """The register process dying midway (not an error the step handles)."""


@pytest.mark.parametrize("down_after", ["claim", "card"])
def test_a_model_delivered_again_after_register_went_down_midway_is_registered_once(ctx, monkeypatch, down_after):
    from serving import registry as registry_module

    event = new_event(MODEL_TRAINED, "/t", _model(ctx), extensions={"mode": "train"})
    real_write = registry_module.ModelRegistry._write_version

    def write_then_go_down(self, *args, **kwargs):
        if down_after == "card":
            real_write(self, *args, **kwargs)
        raise WentDown

    monkeypatch.setattr(registry_module.ModelRegistry, "_write_version", write_then_go_down)
    with pytest.raises(WentDown):
        register.handle(event, ctx)
    monkeypatch.setattr(registry_module.ModelRegistry, "_write_version", real_write)
    monkeypatch.setattr(registry_module, "IDEMPOTENT_WAIT_S", 0.2)  # the owner is long gone when the event comes back
    restarted = StepContext(store=ctx.store, settings=ctx.settings)
    out = register.handle(event, restarted)
    assert out is not None and out.get_type() == MODEL_REGISTERED and out.get_data()["version"] == 1
    assert register.handle(event, restarted).get_data() == out.get_data()  # and again: the same answer
    models = registry_module.ModelRegistry(ctx.store)
    assert [card.version for card in models.versions("digits")] == [1]
    assert [r["action"] for r in models.audit("digits")] == ["register"]
