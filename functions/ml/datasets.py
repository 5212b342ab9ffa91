"""Typed data set versions in the store: ``datasets/<dataset>/<sha256>/`` with data.npz, schema.json, summary.json."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from functions.ml.columns import Column
from functions.ml.metrics import CLASSIFICATION, REGRESSION
from functions.ml.validation import Dataset
from functions.ml.versions import (
    MANIFEST,
    content_hash,
    get_json,
    is_complete,
    json_bytes,
    load_npz,
    npz_bytes,
    write_version,
)
from infra.errors import NotFound
from infra.store import ArtifactStore


@dataclass(frozen=True)
class DatasetVersion:
    """Where a data set version lives and what it holds."""

    dataset: str
    sha256: str
    prefix: str
    rows: int
    num_classes: int
    kind: str
    created: bool  # False when this exact content was already stored
    task: str = CLASSIFICATION
    classes: tuple = ()

    @property
    def data_key(self) -> str:
        return self.prefix + "data.npz"


def schema_of(data: Dataset) -> dict[str, Any]:
    """The typed schema of a data set (the class list is the label mapping: index i stands for classes[i])."""
    schema: dict[str, Any] = {
        "kind": data.kind,
        "task": data.task,
        "features": {"dtype": "float32", "shape": [-1, *data.x.shape[1:]], "names": list(data.feature_names)},
        "label": (
            {"dtype": "int64", "num_classes": data.num_classes, "classes": list(data.classes)}
            if data.task == CLASSIFICATION
            else {"dtype": "float32"}
        ),
    }
    if data.columns:
        schema["columns"] = [{"name": col.name, "type": col.type} for col in data.columns]
    return schema


def summary_of(data: Dataset, source: dict[str, Any]) -> dict[str, Any]:
    """Row count, class balance (or the target's range) and the features' range, plus where the data came from."""
    numeric = data.x.size > 0
    return {
        "rows": len(data.y),
        "task": data.task,
        **label_summary(data.y, data.task, data.classes),
        "min": float(data.x.min()) if numeric else None,
        "max": float(data.x.max()) if numeric else None,
        "source": source,
    }


def label_summary(y: np.ndarray, task: str, classes: tuple) -> dict[str, Any]:
    """Class counts (and names) for classification; the target's mean, spread and range for regression."""
    if task == REGRESSION:
        values = y.astype(np.float64)
        return {"target": {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
                           "max": float(values.max())}}  # fmt: skip
    return {
        "num_classes": len(classes),
        "classes": list(classes),
        "class_counts": np.bincount(y, minlength=len(classes)).tolist(),
    }


def _arrays(data: Dataset) -> dict[str, np.ndarray]:
    arrays = {"x": data.x, "y": data.y}
    if data.c is not None:
        arrays["c"] = data.c
    return arrays


def write_dataset(store: ArtifactStore, dataset: str, data: Dataset, source: dict[str, Any]) -> DatasetVersion:
    """Store a validated data set under its content hash (data and schema first, summary last)."""
    schema = schema_of(data)
    sha = content_hash(_arrays(data), schema)
    prefix = f"datasets/{dataset}/{sha}/"
    parts = {"data.npz": npz_bytes(_arrays(data)), "schema.json": json_bytes(schema)}
    created = write_version(store, prefix, parts, summary_of(data, source))
    rows = len(data.y)
    return DatasetVersion(dataset, sha, prefix, rows, data.num_classes, data.kind, created, data.task, data.classes)


def read_dataset(store: ArtifactStore, prefix: str) -> tuple[Dataset, dict[str, Any]]:
    """A stored data set version and its summary; NotFound unless complete."""
    if not is_complete(store, prefix):
        raise NotFound(f"no complete data set version at {prefix}")
    schema = get_json(store, prefix + "schema.json")
    arrays = load_npz(store, prefix + "data.npz")
    label = schema["label"]
    task = schema.get("task", CLASSIFICATION)
    classes = tuple(label.get("classes", range(label.get("num_classes", 0))))
    data = Dataset(
        x=arrays["x"],
        y=arrays["y"],
        kind=schema["kind"],
        feature_names=tuple(schema["features"]["names"]),
        num_classes=len(classes),
        task=task,
        classes=classes,
        c=arrays.get("c"),
        columns=tuple(Column(col["name"], col["type"]) for col in schema.get("columns", [])),
    )
    return data, get_json(store, prefix + MANIFEST)
