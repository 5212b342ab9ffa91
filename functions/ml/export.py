"""ONNX export of a trained network (encoding and normalization included, the label or the prediction answered) and
its check against PyTorch with ONNX Runtime."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch

from functions.ml.features import Transform
from functions.ml.graph import ENCODED, add_encoder, add_label, feeds
from functions.ml.metrics import CLASSIFICATION, REGRESSION
from functions.ml.models import Network, served
from functions.ml.served import INPUT, LABEL, PREDICTION, PROBABILITIES
from infra.errors import KnflowError

OUTPUT = PROBABILITIES
TOLERANCE = 1e-4
OPSET = 17


class ExportMismatch(KnflowError):
    """ONNX Runtime's outputs differ from PyTorch's by more than the tolerance."""

    status = 500


def _plain(input_shape: tuple[int, ...]) -> Transform:
    """The transform of a network that standardizes nothing and predicts in its own units."""
    return Transform("tabular", tuple(input_shape), np.zeros(1, np.float32), np.ones(1, np.float32))


def export_onnx(
    model: Network,
    input_shape: tuple[int, ...],
    *,
    task: str = CLASSIFICATION,
    classes: Sequence = (),
    transform: Transform | None = None,
) -> bytes:
    """The served model as ONNX bytes. It takes raw float32 rows ``input`` (batch, *input_shape), or one input per
    column when ``transform`` encodes categorical columns, and answers ``probabilities`` and ``label`` (the class
    name for text ``classes``, else the class index) or, for regression, ``prediction``."""
    transform = transform or _plain(input_shape)
    module = served(model, transform, task).cpu().eval()
    output = PREDICTION if task == REGRESSION else OUTPUT
    first = ENCODED if transform.encoder is not None else INPUT
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.zeros(2, *input_shape, dtype=torch.float32),),
            buf,  # type: ignore[arg-type]  # torch's annotation leaves out the file-like objects it also writes to
            dynamo=False,
            opset_version=OPSET,
            input_names=[first],
            output_names=[output],
            dynamic_axes={first: {0: "batch"}, output: {0: "batch"}},
        )
    graph = onnx.load_model_from_string(buf.getvalue())
    if task == CLASSIFICATION:
        add_label(graph, classes)
    if transform.encoder is not None:
        add_encoder(graph, transform.encoder)
    return graph.SerializeToString()


def onnx_feeds(transform: Transform | None, x: np.ndarray, c: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """ONNX Runtime's inputs for raw rows."""
    if transform is not None and transform.encoder is not None:
        return feeds(transform.encoder, x, c if c is not None else np.empty((len(x), 0), dtype=str))
    return {INPUT: np.ascontiguousarray(x, dtype=np.float32)}


def reference(model: Network, transform: Transform, task: str, rows: np.ndarray) -> np.ndarray:
    """What PyTorch answers for encoded rows: probabilities, or predictions (the reference of the export check)."""
    module = served(model, transform, task).eval()
    with torch.no_grad():
        device = next(model.parameters()).device
        return module(torch.as_tensor(rows, dtype=torch.float32, device=device)).cpu().numpy()


def onnx_max_abs_diff(
    onnx_bytes: bytes,
    model: Network,
    x: np.ndarray,
    *,
    task: str = CLASSIFICATION,
    transform: Transform | None = None,
    c: np.ndarray | None = None,
) -> float:
    """The largest |ONNX Runtime - PyTorch| over the probabilities for raw rows ``x`` (and ``c``); for predictions,
    scaled by their magnitude above 1 (float32 holds about 7 digits, so a target in the millions differs in units)."""
    transform = transform or _plain(tuple(x.shape[1:]))
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    answers = dict(zip(names, session.run(names, onnx_feeds(transform, x, c)), strict=True))
    got = answers[PREDICTION if task == REGRESSION else OUTPUT]
    want = reference(model, transform, task, transform.inputs(x, c))
    if LABEL in answers and not _labels_agree(answers[LABEL], got, names_of(onnx_bytes)):
        return float("inf")
    scale = np.maximum(1.0, np.abs(want)) if task == REGRESSION else 1.0
    return float(np.max(np.abs(got - want) / scale)) if got.size else 0.0


def names_of(onnx_bytes: bytes) -> np.ndarray | None:
    """The class names a graph's label lookup holds (None when its label is the class index)."""
    for tensor in onnx.load_model_from_string(onnx_bytes).graph.initializer:
        if tensor.name == "knflow_classes":
            return onnx.numpy_helper.to_array(tensor).astype(str)
    return None


def _labels_agree(labels: np.ndarray, probabilities: np.ndarray, classes: np.ndarray | None) -> bool:
    """The label output is the most probable class (its name, or its index)."""
    index = probabilities.argmax(axis=1)
    want = index if classes is None else classes[index]
    return bool(np.array_equal(np.asarray(labels).astype(want.dtype), want))


def check_export(
    onnx_bytes: bytes,
    model: Network,
    x: np.ndarray,
    tolerance: float = TOLERANCE,
    *,
    task: str = CLASSIFICATION,
    transform: Transform | None = None,
    c: np.ndarray | None = None,
) -> float:
    """Raise ExportMismatch unless ONNX Runtime agrees with PyTorch within ``tolerance``; return the difference."""
    diff = onnx_max_abs_diff(onnx_bytes, model, x, task=task, transform=transform, c=c)
    if not diff <= tolerance:
        raise ExportMismatch(f"ONNX export differs from PyTorch by {diff:.3g} (tolerance {tolerance})")
    return diff
