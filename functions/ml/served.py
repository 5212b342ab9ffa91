"""What a served lifecycle model takes and answers over V2 (its tensor signature), and the request inputs that send it
raw rows. Light on imports: the CLI's probe uses it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from functions.ml.metrics import CLASSIFICATION, REGRESSION

if TYPE_CHECKING:
    from functions.ml.features import Transform

INPUT = "input"
LABEL = "label"
PROBABILITIES = "probabilities"
PREDICTION = "prediction"


def named(classes: Sequence) -> bool:
    """Whether classes are names (the label answers BYTES) rather than numbers (INT64)."""
    return any(not isinstance(c, int | np.integer) for c in classes)


def signature(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    task: str = CLASSIFICATION,
    classes: Sequence = (),
    transform: Transform | None = None,
) -> dict[str, list[dict]]:
    """The V2 (Open Inference Protocol) tensor signature of an exported model."""
    encoder = transform.encoder if transform is not None else None
    if encoder is not None:
        inputs = [
            {"name": col.name, "datatype": "BYTES" if col.name in encoder.categorical else "FP32", "shape": [-1, 1]}
            for col in encoder.columns
        ]
    else:
        inputs = [{"name": INPUT, "datatype": "FP32", "shape": [-1, *input_shape]}]
    if task == REGRESSION:
        return {"inputs": inputs, "outputs": [{"name": PREDICTION, "datatype": "FP32", "shape": [-1]}]}
    textual = named(classes)
    outputs: list[dict] = [
        {"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, num_classes]},
        {"name": LABEL, "datatype": "BYTES" if textual else "INT64", "shape": [-1]},
    ]
    return {"inputs": inputs, "outputs": outputs}


def v2_inputs(signature_inputs: Sequence[dict[str, Any]], x: np.ndarray, c: np.ndarray | None) -> list[dict]:
    """The ``inputs`` of a V2 request for raw rows, after a model's signature: one FP32 tensor ``input``, or one
    [N, 1] tensor per column (numbers FP32, categories BYTES, in the order the signature lists them)."""
    if [s["name"] for s in signature_inputs] == [INPUT]:
        rows = np.ascontiguousarray(x, dtype=np.float32)
        return [{"name": INPUT, "datatype": "FP32", "shape": list(rows.shape), "data": rows.reshape(-1).tolist()}]
    numeric = iter(range(x.shape[1]))
    categorical = iter(range(0 if c is None else c.shape[1]))
    out = []
    for spec in signature_inputs:
        if spec["datatype"] == "BYTES":
            assert c is not None, "BYTES inputs are the categorical columns"
            data: list = [str(v) for v in c[:, next(categorical)].tolist()]
        else:
            data = [float(v) for v in x[:, next(numeric)].tolist()]
        out.append({"name": spec["name"], "datatype": spec["datatype"], "shape": [len(data), 1], "data": data})
    return out
