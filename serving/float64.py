"""scikit-learn models converted to compute as scikit-learn does on a row of float64 numbers, behind a float32 input.

scikit-learn's transformers compute in float64, and its trees (and the ensembles made of them) cast their input to
float32 before comparing it with a split. A float32 graph scales in float32 instead, so a held-out value that lands
exactly on a split (integer-valued features behind a ``StandardScaler``) can go down the other branch. The graph built
here casts the FP32 input to double, runs the transformers in double, casts to float32 in front of a tree model exactly
where scikit-learn does, and answers FP32: the V2 signature is unchanged and the answers equal the library's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: ``metadata_props`` key of a converted graph saying how it computes ("float64"; absent: float32 throughout)
PRECISION_KEY = "knflow.precision"
FLOAT64 = "float64"
FLOAT32 = "float32"


def precision_of(proto: Any) -> str:
    """``"float64"`` for a graph built here, else ``"float32"``."""
    return next((p.value for p in proto.metadata_props if p.key == PRECISION_KEY), FLOAT32)


def splits_in_float32(estimator: Any) -> bool:
    """Whether an estimator casts its input to float32 before its splits: scikit-learn's trees and the ensembles made
    only of them; XGBoost and LightGBM models (their converters take float32 only)."""
    from sklearn.tree import BaseDecisionTree

    if type(estimator).__module__.split(".", 1)[0] in ("xgboost", "lightgbm"):
        return True
    if isinstance(estimator, BaseDecisionTree):
        return True
    members = np.ravel(np.array(getattr(estimator, "estimators_", []), dtype=object))
    return len(members) > 0 and all(isinstance(m, BaseDecisionTree) for m in members)


def float64_graph(model: Any, input_name: str, width: int, options: dict | None, opsets: dict[str, int]) -> Any:
    """The ``onnx.ModelProto`` of a fitted model or Pipeline computing in float64 between a float32 input [N, width]
    and float32 outputs; raises whatever skl2onnx or ONNX Runtime raise when a step has no float64 form."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import DoubleTensorType
    from skl2onnx.sklapi import CastTransformer
    from sklearn.pipeline import Pipeline

    steps = list(model.steps) if isinstance(model, Pipeline) else [("model", model)]
    if splits_in_float32(steps[-1][1]):
        steps.insert(len(steps) - 1, ("knflow_float32", CastTransformer(dtype=np.float32)))
    graph_of = Pipeline(steps) if len(steps) > 1 else model  # a new Pipeline over the same fitted steps
    proto = to_onnx(
        graph_of, initial_types=[(input_name, DoubleTensorType([None, width]))], options=options, target_opset=opsets
    )
    _float32_edges(proto)
    _check_kernels(proto)
    proto.metadata_props.add(key=PRECISION_KEY, value=FLOAT64)
    return proto


def _float32_edges(proto: Any) -> None:
    """Cast the double input from a float32 one and every double output to float32 (V2 FP32 on both sides)."""
    from onnx import TensorProto, helper

    graph = proto.graph
    for value in graph.input:
        inner = f"{value.name}_float64"
        _rename_uses(graph, value.name, inner)
        graph.node.insert(0, helper.make_node("Cast", [value.name], [inner], to=TensorProto.DOUBLE))
        value.type.tensor_type.elem_type = TensorProto.FLOAT
    for value in graph.output:
        if value.type.tensor_type.elem_type != TensorProto.DOUBLE:
            continue
        inner = f"{value.name}_float64"
        _rename_uses(graph, value.name, inner, outputs=True)
        graph.node.append(helper.make_node("Cast", [inner], [value.name], to=TensorProto.FLOAT))
        value.type.tensor_type.elem_type = TensorProto.FLOAT


def _rename_uses(graph: Any, old: str, new: str, *, outputs: bool = False) -> None:
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        if outputs:
            node.output[:] = [new if n == old else n for n in node.output]


def _check_kernels(proto: Any) -> None:
    """ONNX Runtime loads the graph (some operators have no double kernel): fail here, so the caller can fall back."""
    import onnxruntime as ort

    ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
