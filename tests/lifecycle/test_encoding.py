"""Featurize and export of tables: categories learned on the training split only, the same encoding in NumPy and in
the served ONNX graph (an unknown category is all zeros, not an error), the class-name lookup, the regression split
and target scale, and the V2 signature and request inputs of such models."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from functions import featurize, ingest
from functions.ml.columns import Column
from functions.ml.encoding import fit_encoder
from functions.ml.export import check_export, export_onnx, onnx_feeds, reference
from functions.ml.features import Splits, read_features
from functions.ml.features import featurize as fit_features
from functions.ml.graph import check_column_names
from functions.ml.models import build_model
from functions.ml.served import signature, v2_inputs
from functions.ml.validation import Dataset
from infra.errors import InvalidRequest
from tests.lifecycle.helpers import arrived
from tests.lifecycle.tables import diabetes_csv, shop_csv, shop_table

COLUMNS = (Column("size", "numeric"), Column("color", "categorical"), Column("shape", "categorical"))


def _features(ctx, key, blob, **options):
    ctx.store.put(key, blob)
    return featurize.handle(ingest.handle(arrived(key, ctx.store, options=options), ctx), ctx).get_data()


def _shop_splits(test_colors):
    """Splits of the shop table whose test rows take the colors given (e.g. one the training rows never have)."""
    table = shop_table(60)
    c = np.stack([table["color"], table["shape"]], axis=1)
    x = table["size"].reshape(-1, 1).astype(np.float32)
    y = (table["decision"] == "keep").astype(np.int64)
    test_c = c[:3].copy()
    test_c[:, 0] = test_colors
    splits = Splits(
        x={"train": x[:50], "val": x[50:57], "test": x[:3]},
        y={"train": y[:50], "val": y[50:57], "test": y[:3]},
        c={"train": c[:50], "val": c[50:57], "test": test_c},
    )
    data = Dataset(x=x, y=y, kind="tabular", feature_names=("size",), num_classes=2, classes=("drop", "keep"), c=c,
                   columns=COLUMNS)  # fmt: skip
    return data, splits


def test_categories_are_learned_on_the_training_split_only():
    data, splits = _shop_splits(["purple", "red", "green"])
    transform = fit_features(data, splits)
    assert transform.encoder.categories == (("blue", "green", "red"), ("circle", "square"))
    rows = transform.inputs(splits.x["test"], splits.c["test"])
    assert rows.shape == (3, 1 + 3 + 2)
    assert rows[0, 1:4].tolist() == [0, 0, 0]  # purple: never seen in training, all zeros
    assert rows[1, 1:4].tolist() == [0, 0, 1] and rows[2, 1:4].tolist() == [0, 1, 0]
    mask = transform.encoder.one_hot_mask()
    assert transform.mean[mask].tolist() == [0] * 5 and transform.std[mask].tolist() == [1] * 5  # one-hot as is


def test_the_served_graph_encodes_raw_columns_as_training_did_and_zeros_unknown_categories():
    data, splits = _shop_splits(["purple", "red", "blue"])
    transform = fit_features(data, splits)
    model = build_model("mlp", transform, 2, hidden=8, layers=1, dropout=0.0, channels=4).eval()
    onnx = export_onnx(model, transform.input_shape, classes=("drop", "keep"), transform=transform)
    x, c = splits.x["test"], splits.c["test"]
    assert check_export(onnx, model, x, transform=transform, c=c) <= 1e-5
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    assert [(i.name, i.type) for i in session.get_inputs()] == [
        ("size", "tensor(float)"),
        ("color", "tensor(string)"),
        ("shape", "tensor(string)"),
    ]
    probabilities, labels = session.run(["probabilities", "label"], onnx_feeds(transform, x, c))
    zeros = transform.inputs(x[:1], c[:1])
    assert zeros[0, 1:4].tolist() == [0, 0, 0]
    np.testing.assert_allclose(probabilities[:1], reference(model, transform, "classification", zeros), atol=1e-6)
    assert labels.tolist() == [("drop", "keep")[i] for i in probabilities.argmax(axis=1)]


def test_numbered_classes_answer_their_number_and_named_ones_their_name():
    data, splits = _shop_splits(["red", "red", "blue"])
    transform = fit_features(data, splits)
    model = build_model("mlp", transform, 3, hidden=8, layers=1, dropout=0.0, channels=4).eval()
    feeds = onnx_feeds(transform, splits.x["test"], splits.c["test"])
    for classes, kind in (((0, 1, 2), "tensor(int64)"), (("a", "b", "c"), "tensor(string)")):
        session = ort.InferenceSession(export_onnx(model, transform.input_shape, classes=classes, transform=transform))
        assert session.get_outputs()[1].name == "label" and session.get_outputs()[1].type == kind
        probabilities, labels = session.run(None, feeds)
        assert labels.tolist() == [classes[i] for i in probabilities.argmax(axis=1)]


def test_a_categorical_table_featurizes_with_its_encoder_and_signature(ctx):
    data = _features(ctx, "raw/shop/s.csv", shop_csv(), label="decision")
    splits, transform, manifest = read_features(ctx.store, data["prefix"])
    assert manifest["classes"] == ["drop", "keep"] and data["classes"] == ["drop", "keep"]
    assert transform.encoder.categorical == ("color", "shape") and transform.input_shape == (6,)
    assert set(transform.encoder.categories[0]) == set(splits.c["train"][:, 0].tolist())
    assert signature(transform.input_shape, 2, classes=("drop", "keep"), transform=transform) == {
        "inputs": [
            {"name": "size", "datatype": "FP32", "shape": [-1, 1]},
            {"name": "color", "datatype": "BYTES", "shape": [-1, 1]},
            {"name": "shape", "datatype": "BYTES", "shape": [-1, 1]},
        ],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
        ],
    }


def test_v2_inputs_send_each_column_of_a_raw_row_under_its_name():
    specs = [
        {"name": "size", "datatype": "FP32", "shape": [-1, 1]},
        {"name": "color", "datatype": "BYTES", "shape": [-1, 1]},
        {"name": "weight", "datatype": "FP32", "shape": [-1, 1]},
    ]
    inputs = v2_inputs(specs, np.array([[1.5, 70.0], [2.5, 80.0]]), np.array([["red"], ["blue"]]))
    assert inputs == [
        {"name": "size", "datatype": "FP32", "shape": [2, 1], "data": [1.5, 2.5]},
        {"name": "color", "datatype": "BYTES", "shape": [2, 1], "data": ["red", "blue"]},
        {"name": "weight", "datatype": "FP32", "shape": [2, 1], "data": [70.0, 80.0]},
    ]
    plain = v2_inputs([{"name": "input", "datatype": "FP32"}], np.ones((1, 3)), None)
    assert plain == [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1.0, 1.0, 1.0]}]


def test_regression_splits_are_random_and_the_target_scale_is_fitted_on_train(ctx):
    data = _features(ctx, "raw/diabetes/d.csv", diabetes_csv(), label="progression", task="regression")
    assert data["task"] == "regression" and data["num_classes"] == 0
    splits, transform, _ = read_features(ctx.store, data["prefix"])
    assert splits.y["train"].dtype == np.float32 and sum(len(v) for v in splits.y.values()) == 442
    assert transform.target_mean == pytest.approx(float(splits.y["train"].mean()), rel=1e-5)
    assert transform.target_std == pytest.approx(float(splits.y["train"].std()), rel=1e-5)
    stats = ctx.store.get(data["stats_key"]).decode()
    assert '"target"' in stats and "class_counts" not in stats


@pytest.mark.parametrize(
    "names, clash",
    [(("a", "a", "b"), "'a'"), (("size", "label"), "'label'"), (("probabilities",), "'probabilities'")],
)
def test_column_names_that_cannot_be_input_names_are_refused(names, clash):
    with pytest.raises(InvalidRequest, match=f"columns \\[{clash}\\] cannot be inputs"):
        check_column_names(tuple(Column(n, "categorical") for n in names))


def test_the_encoder_fits_sorted_categories_per_column():
    encoder = fit_encoder(COLUMNS, np.array([["red", "square"], ["blue", "circle"], ["red", "circle"]]))
    assert encoder.categories == (("blue", "red"), ("circle", "square")) and encoder.width == 5


def test_a_regression_in_large_units_passes_the_export_check_relative_to_its_magnitude():
    from functions.ml.features import Transform

    transform = Transform("tabular", (3,), np.zeros(3, np.float32), np.ones(3, np.float32), None, 4.5e6, 1.2e6)
    model = build_model("mlp", transform, 1, hidden=16, layers=1, dropout=0.0, channels=4).eval()
    x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    onnx = export_onnx(model, (3,), task="regression", transform=transform)
    predictions = reference(model, transform, "regression", x)
    assert predictions.min() > 1e6  # millions: float32 keeps whole units at best
    assert check_export(onnx, model, x, task="regression", transform=transform) <= 1e-6
