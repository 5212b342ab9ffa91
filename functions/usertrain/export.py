"""In the child: what an entrypoint returned, as ONNX bytes plus the model's own answers on the test split.

A ``torch.nn.Module`` is put behind knflow's standardization and a softmax and exported as knflow's own models are; a
fitted scikit-learn (or XGBoost / LightGBM) model goes through ``serving.formats.convert``, checked on the held-out
rows; ONNX bytes or an ``onnx.ModelProto`` are taken as they are. The train step checks ONNX Runtime's answers against
the reference written here, so every model is checked in one place.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from functions.usertrain.context import TrainContext

MODEL, REFERENCE = "model.onnx", "reference.npy"
ACCEPTED = "a torch.nn.Module, ONNX bytes or an onnx.ModelProto, or a fitted scikit-learn estimator or Pipeline"


class NotAModel(TypeError):
    """The entrypoint returned something knflow cannot serve."""


def export(returned: Any, ctx: TrainContext, out: Path) -> dict[str, Any]:
    """Write ``out/model.onnx`` and, when the model can answer for itself, ``out/reference.npy``; → the facts."""
    if isinstance(returned, bytes | bytearray | memoryview) or _is_onnx_proto(returned):
        (out / MODEL).write_bytes(_onnx_bytes(returned))
        return {"kind": "onnx", "reference": None}
    facts: dict[str, Any]
    if _is_torch_module(returned):
        onnx_bytes, reference = _pytorch(_unwrapped(returned), ctx)
        kind, output, facts = "pytorch", "probabilities", {}
    else:
        onnx_bytes, (output, reference), facts = _library(returned, ctx)
        kind = facts["format"]
    (out / MODEL).write_bytes(onnx_bytes)
    np.save(out / REFERENCE, reference)
    return {"kind": kind, "reference": output, "conversion": facts}


def _is_onnx_proto(obj: Any) -> bool:
    return "onnx" in sys.modules and isinstance(obj, sys.modules["onnx"].ModelProto)


def _is_torch_module(obj: Any) -> bool:
    return "torch" in sys.modules and isinstance(obj, sys.modules["torch"].nn.Module)


def _unwrapped(module: Any) -> Any:
    """The module inside DistributedDataParallel (what a training with several workers may return)."""
    parallel = sys.modules["torch"].nn.parallel.DistributedDataParallel
    return module.module if isinstance(module, parallel) else module


def _onnx_bytes(returned: Any) -> bytes:
    data = returned.SerializeToString() if _is_onnx_proto(returned) else bytes(returned)
    if not data:
        raise NotAModel("the entrypoint returned empty bytes, not an ONNX model")
    return data


def _pytorch(module: Any, ctx: TrainContext) -> tuple[bytes, np.ndarray]:
    """Standardization + the module + softmax as ONNX, and PyTorch's probabilities on the test split."""
    from functions.ml.export import export_onnx, reference
    from functions.ml.features import Transform
    from functions.ml.models import Network, Normalize

    transform = Transform(ctx.kind, ctx.input_shape, ctx.mean, ctx.std)
    network = Network(Normalize(transform), module).cpu().eval()
    onnx_bytes = export_onnx(network, ctx.input_shape)
    return onnx_bytes, reference(network, transform, "classification", ctx.test.x.astype(np.float32))


def _library(model: Any, ctx: TrainContext) -> tuple[bytes, tuple[str, np.ndarray], dict[str, Any]]:
    """A fitted scikit-learn / XGBoost / LightGBM model converted and checked on the held-out rows (test, then val),
    and the library's own answer on the test split (float32 values widened, as a V2 request carries them)."""
    from infra.errors import InvalidRequest
    from serving.converters import library_of
    from serving.formats import convert

    try:
        library = library_of(model)
    except InvalidRequest:
        raise NotAModel(f"the entrypoint returned a {_type_name(model)}, not a model: return {ACCEPTED}") from None
    test, val = _rows(ctx.test.x), _rows(ctx.val.x)
    onnx_bytes, conversion = convert(model, np.concatenate([test, val]))
    answer = library.predict(model, test.astype(np.float32).astype(np.float64))
    output = conversion.outputs[-1]  # probabilities, scores or prediction: the one compared with the library
    return onnx_bytes, (output, np.asarray(getattr(answer, output), np.float64)), conversion.to_dict()


def _rows(x: np.ndarray) -> np.ndarray:
    """A library model takes rows as a 2-D matrix (images flattened)."""
    return x.reshape(len(x), -1)


def _type_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}".removeprefix("builtins.")
