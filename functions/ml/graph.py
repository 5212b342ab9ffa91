"""ONNX nodes around an exported network, so the served graph takes what clients have and answers what they want:
in front, one input per tabular column with the categorical ones one-hot encoded (ai.onnx.ml OneHotEncoder, all
zeros for a category the training split never had); behind, the class label (ArgMax, then a Gather over the class
names when they are text)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from functions.ml.columns import CATEGORICAL, Column
from functions.ml.encoding import Encoder
from functions.ml.served import LABEL, PREDICTION, PROBABILITIES, named
from infra.errors import InvalidRequest

#: the exported network's input when the graph encodes columns in front of it
ENCODED = "knflow_encoded"
ML_DOMAIN, ML_OPSET = "ai.onnx.ml", 1
RESERVED = (LABEL, PROBABILITIES, PREDICTION)


def check_column_names(columns: Sequence[Column]) -> None:
    """Column names become the served model's input names: refuse duplicates and the names of its outputs."""
    names = [col.name for col in columns]
    clash = sorted({n for n in names if names.count(n) > 1 or n in RESERVED or n.startswith("knflow_")})
    if clash:
        raise InvalidRequest(
            f"columns {clash} cannot be inputs of the served model (each column is one input named after it; names "
            f"must be unique and not {', '.join(RESERVED)} or start with knflow_): rename them"
        )


def add_label(model: onnx.ModelProto, classes: Sequence) -> None:
    """Append the ``label`` output: the most probable class, as its name (BYTES) or, for numbered classes, its
    index (INT64)."""
    graph = model.graph
    names = [str(c) for c in classes]
    textual = named(classes)
    index = "knflow_label_index" if textual else LABEL
    graph.node.append(helper.make_node("ArgMax", [PROBABILITIES], [index], axis=1, keepdims=0, name="knflow_argmax"))
    if textual:
        table = numpy_helper.from_array(np.asarray(names, dtype=object), "knflow_classes")
        graph.initializer.append(table)
        graph.node.append(helper.make_node("Gather", ["knflow_classes", index], [LABEL], axis=0, name="knflow_label"))
    kind = TensorProto.STRING if textual else TensorProto.INT64
    graph.output.append(helper.make_tensor_value_info(LABEL, kind, ["batch"]))


def add_encoder(model: onnx.ModelProto, encoder: Encoder) -> None:
    """Replace the network's float input (named ``ENCODED``) by one input per column, [N, 1], FP32 or BYTES, and
    the nodes that encode them in the encoder's order (numeric columns, then each categorical one-hot block)."""
    graph = model.graph
    inputs, numeric, blocks = [], [], []
    categories = dict(zip(encoder.categorical, encoder.categories, strict=True))
    for col in encoder.columns:
        kind = TensorProto.STRING if col.type == CATEGORICAL else TensorProto.FLOAT
        inputs.append(helper.make_tensor_value_info(col.name, kind, ["batch", 1]))
        if col.type != CATEGORICAL:
            numeric.append(col.name)
    nodes = []
    for n, name in enumerate(encoder.categorical):
        cats = list(categories[name])
        nodes.append(
            helper.make_node(
                "OneHotEncoder", [name], [f"knflow_onehot{n}"], domain=ML_DOMAIN, cats_strings=cats, zeros=1,
                name=f"knflow_onehot{n}",
            )
        )  # fmt: skip
        shape = numpy_helper.from_array(np.asarray([-1, len(cats)], np.int64), f"knflow_shape{n}")
        graph.initializer.append(shape)
        nodes.append(helper.make_node("Reshape", [f"knflow_onehot{n}", shape.name], [f"knflow_block{n}"]))
        blocks.append(f"knflow_block{n}")
    nodes.append(helper.make_node("Concat", [*numeric, *blocks], [ENCODED], axis=1, name="knflow_concat"))
    kept = [i for i in graph.input if i.name != ENCODED]
    del graph.input[:]
    graph.input.extend([*inputs, *kept])
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend([*nodes, *existing])
    if not any(o.domain == ML_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(ML_DOMAIN, ML_OPSET))


def feeds(encoder: Encoder, x: np.ndarray, c: np.ndarray) -> dict[str, np.ndarray]:
    """ONNX Runtime's inputs for raw rows of a graph with ``add_encoder``: one [N, 1] array per column."""
    numeric = {name: i for i, name in enumerate(encoder.numeric)}
    categorical = {name: j for j, name in enumerate(encoder.categorical)}
    out = {}
    for col in encoder.columns:
        if col.type == CATEGORICAL:
            out[col.name] = np.asarray(c[:, categorical[col.name]], dtype=object).reshape(-1, 1)
        else:
            out[col.name] = np.ascontiguousarray(x[:, numeric[col.name]], dtype=np.float32).reshape(-1, 1)
    return out
