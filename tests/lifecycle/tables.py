"""Tables as users have them, written as CSV or Parquet: scikit-learn's iris with class names as labels, its diabetes
data as a regression, and a table with categorical columns whose label depends on them."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.datasets import load_diabetes, load_iris

IRIS_COLUMNS = ("sepal_length", "sepal_width", "petal_length", "petal_width")
IRIS_CLASSES = ("setosa", "versicolor", "virginica")
#: a tiny network trains iris and diabetes well within a few seconds
SMALL = {"epochs": 40, "hidden": 32, "lr": 0.02, "batch_size": 16}


def csv_bytes(header: list[str], rows: list[list[object]]) -> bytes:
    lines = [",".join(header)] + [",".join(str(v) for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def iris_csv(label: str = "species") -> bytes:
    """Iris with its class names in the label column (``setosa``, ``versicolor``, ``virginica``)."""
    iris = load_iris()
    rows = [[*r.tolist(), IRIS_CLASSES[t]] for r, t in zip(iris.data, iris.target, strict=True)]
    return csv_bytes([*IRIS_COLUMNS, label], rows)


def numeric_iris_csv(label: str = "label") -> bytes:
    """Iris as numbers only: columns ``a`` to ``d`` and the class index in ``label``."""
    x, y = load_iris(return_X_y=True)
    buffer = io.StringIO()
    np.savetxt(buffer, np.column_stack([x, y]), delimiter=",", fmt="%g", comments="", header=f"a,b,c,d,{label}")
    return buffer.getvalue().encode()


def diabetes_csv(label: str = "progression") -> bytes:
    """The diabetes data: ten numeric features and a real-valued target (disease progression after a year)."""
    data = load_diabetes()
    rows = [[*r.tolist(), float(t)] for r, t in zip(data.data, data.target, strict=True)]
    return csv_bytes([*data.feature_names, label], rows)


def shop_table(rows: int = 400, seed: int = 0) -> dict[str, np.ndarray]:
    """A table whose label (``keep`` / ``drop``) depends on a categorical column and a numeric one: keep when the
    color is red and the size small, or the color is not red and the size large. ``shape`` is noise."""
    rng = np.random.default_rng(seed)
    size = rng.normal(10.0, 3.0, rows).round(3)
    color = rng.choice(["red", "green", "blue"], rows)
    shape = rng.choice(["circle", "square"], rows)
    decision = np.where((color == "red") ^ (size > 10.0), "keep", "drop")
    return {"size": size, "color": color, "shape": shape, "decision": decision}


def table_csv(columns: dict[str, np.ndarray]) -> bytes:
    """A CSV of named columns of equal length, in the order given."""
    names = list(columns)
    return csv_bytes(names, [list(row) for row in zip(*(columns[n].tolist() for n in names), strict=True)])


def shop_csv(rows: int = 400, seed: int = 0) -> bytes:
    return table_csv(shop_table(rows, seed))


def shop_parquet(rows: int = 400, seed: int = 0) -> bytes:
    table = shop_table(rows, seed)
    buf = io.BytesIO()
    pq.write_table(pa.table({k: v.tolist() for k, v in table.items()}), buf)
    return buf.getvalue()
