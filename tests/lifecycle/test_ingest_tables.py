"""Ingest of data as users have it: class names as labels, a real-valued target, categorical columns; and what is not
supported yet refused with a reason that names the column, leaving nothing behind."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from functions import featurize, ingest
from functions.ml.columns import CATEGORICAL, parse_numbers, type_column
from functions.ml.datasets import read_dataset
from infra.errors import InvalidRequest
from tests.lifecycle.helpers import arrived, digits_npz, keys
from tests.lifecycle.tables import IRIS_CLASSES, diabetes_csv, iris_csv, shop_csv, shop_parquet, shop_table, table_csv


def _ingest(ctx, key, blob, **options):
    ctx.store.put(key, blob)
    return ingest.handle(arrived(key, ctx.store, options=options), ctx).get_data()


def test_class_names_become_sorted_class_indices_kept_with_the_version(ctx):
    data = _ingest(ctx, "raw/iris/iris.csv", iris_csv(), label="species")
    assert data["classes"] == list(IRIS_CLASSES) and data["num_classes"] == 3 and data["task"] == "classification"
    ds, summary = read_dataset(ctx.store, data["prefix"])
    assert ds.y.dtype == np.int64 and np.bincount(ds.y).tolist() == [50, 50, 50]
    assert ds.y[0] == 0 and ds.y[-1] == 2  # the file starts with setosa rows and ends with virginica ones
    schema = json.loads(ctx.store.get(data["schema_key"]))
    assert schema["label"]["classes"] == list(IRIS_CLASSES)
    assert summary["classes"] == list(IRIS_CLASSES) and summary["class_counts"] == [50, 50, 50]


def test_the_class_order_does_not_depend_on_the_order_of_rows(ctx):
    lines = iris_csv().decode().splitlines()
    reversed_rows = "\n".join([lines[0], *reversed(lines[1:])]).encode()
    first = _ingest(ctx, "raw/iris/a.csv", iris_csv(), label="species")
    second = _ingest(ctx, "raw/iris/b.csv", reversed_rows, label="species")
    assert first["classes"] == second["classes"] == sorted(IRIS_CLASSES)


def test_numeric_labels_keep_their_numbers_as_classes(ctx, digits):
    data = _ingest(ctx, "raw/digits/d.npz", digits_npz(digits))
    assert data["classes"] == list(range(10)) and data["task"] == "classification"


def test_text_labels_in_npz_and_parquet_are_class_names_too(ctx):
    table = shop_table()
    buf = io.BytesIO()
    np.savez(buf, x=table["size"].reshape(-1, 1), y=table["decision"])
    assert _ingest(ctx, "raw/shop/s.npz", buf.getvalue(), label="decision")["classes"] == ["drop", "keep"]
    assert _ingest(ctx, "raw/shop/s.parquet", shop_parquet(), label="decision")["classes"] == ["drop", "keep"]


def test_a_regression_target_stays_real_valued(ctx):
    data = _ingest(ctx, "raw/diabetes/d.csv", diabetes_csv(), label="progression", task="regression")
    assert data["task"] == "regression" and data["num_classes"] == 0 and data["classes"] == []
    ds, summary = read_dataset(ctx.store, data["prefix"])
    from sklearn.datasets import load_diabetes

    np.testing.assert_allclose(ds.y, load_diabetes().target, rtol=1e-6)
    assert ds.y.dtype == np.float32 and "class_counts" not in summary
    assert summary["target"]["min"] == 25.0 and summary["target"]["max"] == 346.0


def test_a_categorical_table_is_the_same_version_from_csv_and_parquet(ctx):
    from_csv = _ingest(ctx, "raw/shop/s.csv", shop_csv(), label="decision")
    from_parquet = _ingest(ctx, "raw/shop/s.parquet", shop_parquet(), label="decision")
    assert from_csv["version"] == from_parquet["version"]
    ds, _ = read_dataset(ctx.store, from_csv["prefix"])
    assert [(c.name, c.type) for c in ds.columns] == [
        ("size", "numeric"),
        ("color", "categorical"),
        ("shape", "categorical"),
    ]
    assert ds.x.shape == (400, 1) and ds.c.shape == (400, 2)
    assert ds.c[:, 0].tolist() == shop_table()["color"].tolist()


def test_the_categorical_option_takes_numeric_codes_as_categories(ctx):
    table = shop_table()
    codes = np.where(table["color"] == "red", 94110, 10001)
    blob = table_csv({"zip": codes, "size": table["size"], "decision": table["decision"]})
    data = _ingest(ctx, "raw/zips/z.csv", blob, label="decision", categorical=["zip"])
    ds, _ = read_dataset(ctx.store, data["prefix"])
    assert ds.categorical_names == ("zip",) and sorted(set(ds.c[:, 0].tolist())) == ["10001", "94110"]


def _with_column(name, values):
    """The shop table with one column added in front (or replaced, when it has one of that name)."""
    return table_csv({name: np.asarray(values), **{k: v for k, v in shop_table().items() if k != name}})


def _parquet(columns):
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def _mixed_sizes():
    sizes = shop_table()["size"].astype(object)
    sizes[[3, 9]] = "large"
    return _with_column("weight", sizes)


DAYS = np.datetime64("2024-01-01") + np.arange(400)
REFUSED = {
    "date column": ("d.csv", lambda: _with_column("when", DAYS.astype(str)), {}, "column 'when' holds dates"),
    "timestamp column in parquet": (
        "d.parquet",
        lambda: _parquet({"when": pa.array(DAYS.astype("datetime64[s]")), "decision": shop_table()["decision"]}),
        {},
        "column 'when' holds dates",
    ),
    "free text": (
        "t.csv",
        lambda: _with_column("comment", [f"customer {i} says hello" for i in range(400)]),
        {},
        "column 'comment' holds text with 400 distinct values",
    ),
    "mixed numbers and text": ("m.csv", _mixed_sizes, {}, "column 'weight' mixes numbers and text"),
    "missing category": (
        "c.csv",
        lambda: _with_column("region", ["north", ""] * 200),
        {},
        "categorical column 'region' has 200 missing values",
    ),
    "one class": (
        "o.csv",
        lambda: _with_column("decision", ["keep"] * 400),
        {},
        "label column 'decision' holds one class \\('keep'\\)",
    ),
    "text regression target": (
        "r.csv",
        lambda: iris_csv(label="decision"),
        {"task": "regression"},
        "regression target 'decision' is not numeric: data row 1 holds 'setosa'",
    ),
    "constant regression target": (
        "k.csv",
        lambda: _with_column("decision", [3.5] * 400),
        {"task": "regression"},
        "regression target 'decision' is 3.5 in every row",
    ),
    "fractional class labels": (
        "f.csv",
        lambda: _with_column("decision", shop_table()["size"]),
        {},
        "set the run option task: regression",
    ),
    "list column in parquet": (
        "l.parquet",
        lambda: _parquet({"tags": [[1, 2]] * 30, "decision": ["a", "b", "c"] * 10}),
        {},
        "column 'tags' has type list<.*>, which is not supported",
    ),
    "categorical option naming no column": ("z.csv", shop_csv, {"categorical": ["zip"]}, "names \\['zip'\\]"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_what_is_not_supported_is_refused_naming_the_column(ctx, case):
    name, make, options, reason = REFUSED[case]
    key = f"raw/t/{name}"
    ctx.store.put(key, make())
    with pytest.raises(InvalidRequest, match=reason) as info:
        ingest.handle(arrived(key, ctx.store, options={"label": "decision", **options}), ctx)
    assert name in str(info.value) and info.value.status == 400
    assert keys(ctx.store, "datasets/") == [] and keys(ctx.store, "runs/") == []


LR = {"name": "lr", "type": "double", "min": 0.001, "max": 0.1}


@pytest.mark.parametrize(
    "options, reason",
    [
        ({"task": "ranking"}, "task must be one of classification, regression"),
        ({"categorical": "color"}, "categorical must be a list of column names"),
        ({"categorical": ["color"]}, "'categorical' is for CSV and Parquet columns"),
        (
            {"task": "regression", "tuning": {"objective": {"metric": "val_accuracy"}, "parameters": [LR]}},
            "tuning objective 'val_accuracy' is not measured for a regression run",
        ),
        (
            {"task": "regression", "deploy": {"metric": "test_accuracy"}},
            "metric 'test_accuracy' is not measured for a regression run",
        ),
    ],
)
def test_run_options_that_do_not_fit_the_task_are_refused(ctx, digits, options, reason):
    ctx.store.put("raw/digits/d.npz", digits_npz(digits))
    with pytest.raises(InvalidRequest, match=reason):
        ingest.handle(arrived("raw/digits/d.npz", ctx.store, options=options), ctx)
    assert keys(ctx.store, "datasets/") == []


def test_a_column_named_like_an_output_of_the_served_model_is_refused_at_featurize(ctx):
    table = shop_table()
    blob = table_csv({"label": table["size"], "color": table["color"], "decision": table["decision"]})
    ctx.store.put("raw/shop/s.csv", blob)
    ingested = ingest.handle(arrived("raw/shop/s.csv", ctx.store, options={"label": "decision"}), ctx)
    with pytest.raises(InvalidRequest, match=r"columns \['label'\] cannot be inputs of the served model"):
        featurize.handle(ingested, ctx)


def test_a_text_column_is_categories_whatever_memory_the_number_parse_reuses():
    """The number parse once left text rows unset, so a text column read as "mixed" when the memory it reused happened
    to hold NaNs; every text row must count as text whatever was there before."""
    cells = ["green", "red", "blue"] * 133
    for _ in range(20):
        np.full(len(cells), np.nan)  # freed at once: the next array of this size may reuse its memory
        kind, values = type_column("color", cells, categorical=False, where="raw/shop/s.csv")
        assert kind == CATEGORICAL and values.shape == (399,)
    numbers, bad = parse_numbers(["1.5", "red", "", "2"])
    assert bad == [1] and numbers[0] == 1.5 and numbers[3] == 2 and np.isnan(numbers[1:3]).all()
