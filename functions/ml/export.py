"""ONNX export of a trained classifier (normalization included) and its check against PyTorch with ONNX Runtime."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnxruntime as ort
import torch

from functions.ml.models import Classifier, Probabilities
from functions.ml.training import predict_proba
from infra.errors import KnflowError

INPUT = "input"
OUTPUT = "probabilities"
TOLERANCE = 1e-4
OPSET = 17


class ExportMismatch(KnflowError):
    """ONNX Runtime's outputs differ from PyTorch's by more than the tolerance."""

    status = 500


def export_onnx(model: Classifier, input_shape: tuple[int, ...]) -> bytes:
    """The model as ONNX bytes: raw float32 input of shape (batch, *input_shape) → class probabilities."""
    wrapped = Probabilities(model).cpu().eval()
    example = torch.zeros(2, *input_shape, dtype=torch.float32)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapped,
            (example,),
            buf,
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
        )
    return buf.getvalue()


def onnx_max_abs_diff(onnx_bytes: bytes, model: Classifier, x: np.ndarray) -> float:
    """The largest |ONNX Runtime - PyTorch| over the probabilities for inputs ``x``."""
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT], {INPUT: np.ascontiguousarray(x, dtype=np.float32)})[0]
    want = predict_proba(model, x)
    return float(np.max(np.abs(got - want)))


def check_export(onnx_bytes: bytes, model: Classifier, x: np.ndarray, tolerance: float = TOLERANCE) -> float:
    """Raise ExportMismatch unless ONNX Runtime agrees with PyTorch within ``tolerance``; return the difference."""
    diff = onnx_max_abs_diff(onnx_bytes, model, x)
    if not diff <= tolerance:
        raise ExportMismatch(f"ONNX export differs from PyTorch by {diff:.3g} (tolerance {tolerance})")
    return diff


def signature(input_shape: tuple[int, ...], num_classes: int) -> dict[str, list[dict]]:
    """The V2 (Open Inference Protocol) tensor signature of an exported model."""
    return {
        "inputs": [{"name": INPUT, "datatype": "FP32", "shape": [-1, *input_shape]}],
        "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, num_classes]}],
    }
