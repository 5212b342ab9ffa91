"""Typed data set versions in the store: ``datasets/<dataset>/<sha256>/`` with data.npz, schema.json, summary.json."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

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

    @property
    def data_key(self) -> str:
        return self.prefix + "data.npz"


def schema_of(data: Dataset) -> dict[str, Any]:
    """The typed schema of a data set."""
    return {
        "kind": data.kind,
        "features": {"dtype": "float32", "shape": [-1, *data.x.shape[1:]], "names": list(data.feature_names)},
        "label": {"dtype": "int64", "num_classes": data.num_classes},
    }


def summary_of(data: Dataset, source: dict[str, Any]) -> dict[str, Any]:
    """Row count, class balance and value range, plus where the data came from."""
    counts = np.bincount(data.y, minlength=data.num_classes)
    return {
        "rows": len(data.y),
        "num_classes": data.num_classes,
        "class_counts": counts.tolist(),
        "min": float(data.x.min()),
        "max": float(data.x.max()),
        "source": source,
    }


def write_dataset(store: ArtifactStore, dataset: str, data: Dataset, source: dict[str, Any]) -> DatasetVersion:
    """Store a validated data set under its content hash (data and schema first, summary last)."""
    schema = schema_of(data)
    sha = content_hash({"x": data.x, "y": data.y}, schema)
    prefix = f"datasets/{dataset}/{sha}/"
    parts = {"data.npz": npz_bytes({"x": data.x, "y": data.y}), "schema.json": json_bytes(schema)}
    created = write_version(store, prefix, parts, summary_of(data, source))
    return DatasetVersion(dataset, sha, prefix, len(data.y), data.num_classes, data.kind, created)


def read_dataset(store: ArtifactStore, prefix: str) -> tuple[Dataset, dict[str, Any]]:
    """A stored data set version and its summary; NotFound unless complete."""
    if not is_complete(store, prefix):
        raise NotFound(f"no complete data set version at {prefix}")
    schema = get_json(store, prefix + "schema.json")
    arrays = load_npz(store, prefix + "data.npz")
    data = Dataset(
        x=arrays["x"],
        y=arrays["y"],
        kind=schema["kind"],
        feature_names=tuple(schema["features"]["names"]),
        num_classes=schema["label"]["num_classes"],
    )
    return data, get_json(store, prefix + MANIFEST)
