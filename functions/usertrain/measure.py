"""The train step's measure of a model a user's entrypoint returned, on the ONNX graph that will be served: it loads in
ONNX Runtime, takes the splits' rows, answers labels or class scores, agrees with the model's own answers; and its
accuracy and loss on the validation and test splits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from infra.errors import KnflowError


class UserCodeFailed(KnflowError):
    """The user's training code failed, or returned a model knflow cannot serve: running it again gives the same, so
    it is not retried (422); a trial fails with the reason."""

    status = 422
    retryable = False


@dataclass(frozen=True)
class Measured:
    """Metrics of the served graph and how far it is from the model's own answers (None: an ONNX model, no other)."""

    metrics: dict[str, float]
    max_abs_diff: float | None


class GraphRunner:
    """An ONNX model in ONNX Runtime, fed the splits' rows in the shape its one input takes."""

    def __init__(self, onnx_bytes: bytes, num_classes: int) -> None:
        import onnxruntime as ort

        try:
            self.session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ONNX Runtime's reason is the model's problem, told to the user
            raise UserCodeFailed(f"the returned model does not load in ONNX Runtime: {_first_line(exc)}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise UserCodeFailed(f"the returned model takes {len(inputs)} inputs; knflow feeds one tensor of features")
        self.input, self.rank, self.num_classes = inputs[0].name, len(inputs[0].shape), num_classes

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        rows = np.ascontiguousarray(x, np.float32)
        if self.rank == 2 and rows.ndim > 2:
            rows = rows.reshape(len(rows), -1)
        try:
            answers = self.session.run(None, {self.input: rows})
        except Exception as exc:
            raise UserCodeFailed(
                f"the returned model cannot answer rows of shape {list(rows.shape)}: {_first_line(exc)}"
            ) from None
        return dict(zip([o.name for o in self.session.get_outputs()], answers, strict=True))

    def scores(self, outputs: dict[str, np.ndarray], rows: int) -> np.ndarray | None:
        """``probabilities``, else the first float output shaped [rows, classes]."""
        if "probabilities" in outputs:
            return outputs["probabilities"]
        return next((v for v in outputs.values() if v.dtype.kind == "f" and v.shape == (rows, self.num_classes)), None)


def measure(
    onnx_bytes: bytes, splits: Any, num_classes: int, reference: tuple[str, np.ndarray] | None, tolerance: float
) -> Measured:
    """Accuracy and loss on val and test; UserCodeFailed when the graph cannot answer or differs from ``reference``
    (output name, the model's own answer on the test split) by more than ``tolerance``."""
    runner = GraphRunner(onnx_bytes, num_classes)
    metrics: dict[str, float] = {}
    diff = None
    for split in ("val", "test"):
        outputs = runner.run(splits.x[split])
        metrics |= _scored(split, runner, outputs, splits.y[split])
        if split == "test" and reference is not None:
            diff = _difference(outputs, *reference, tolerance)
    return Measured(metrics, diff)


def _scored(split: str, runner: GraphRunner, outputs: dict[str, np.ndarray], y: np.ndarray) -> dict[str, float]:
    scores = runner.scores(outputs, len(y))
    label = outputs.get("label")
    if label is None and scores is None:
        found = {k: list(v.shape) for k, v in outputs.items()}
        raise UserCodeFailed(f"the returned model answers {found}: knflow needs labels or [N, {runner.num_classes}]")
    predicted = np.asarray(label).reshape(-1) if label is not None else scores.argmax(axis=1)  # type: ignore[union-attr]  # one is set (above)
    out = {f"{split}_accuracy": float((predicted == y).mean())}
    if scores is not None and _are_probabilities(scores):
        picked = np.clip(scores[np.arange(len(y)), y].astype(np.float64), 1e-12, 1.0)
        out[f"{split}_loss"] = float(-np.log(picked).mean())
    return out


def _are_probabilities(scores: np.ndarray) -> bool:
    return bool((scores >= -1e-6).all() and np.allclose(scores.sum(axis=1), 1.0, atol=1e-3))


def _difference(outputs: dict[str, np.ndarray], name: str, want: np.ndarray, tolerance: float) -> float:
    got = outputs.get(name)
    if got is None or got.size != want.size:
        raise UserCodeFailed(f"the exported model answers no {name} like the returned model's {list(want.shape)}")
    diff = np.abs(got.astype(np.float64).reshape(want.shape) - want)
    # probabilities agree absolutely; scores and predictions relative to their size (float32 keeps ~7 digits)
    allowed = tolerance if name == "probabilities" else tolerance * np.maximum(1.0, np.abs(want))
    if not (diff <= allowed).all():
        raise UserCodeFailed(
            f"the exported model's {name} differ from the returned model's by up to {float(np.nanmax(diff)):.3g} on "
            f"the test split (tolerance {tolerance})"
        )
    return float(diff.max(initial=0.0))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}"
