"""Checks that raw arrays make a usable classification data set, and their conversion to typed arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from functions.ml.readers import RawData
from infra.errors import InvalidRequest

MIN_ROWS = 20
MAX_CLASSES = 1000


@dataclass(frozen=True)
class Dataset:
    """A validated data set: float32 features, int64 labels in ``0..num_classes-1``."""

    x: np.ndarray
    y: np.ndarray
    kind: str
    feature_names: tuple[str, ...]
    num_classes: int


def validate(raw: RawData, name: str, *, min_rows: int = MIN_ROWS) -> Dataset:
    """Check shape, dtypes, missing values, label range and row count; raise InvalidRequest with the reason."""
    x, y = raw.x, raw.y
    if x.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
        raise InvalidRequest(f"{name}: features and labels must be numeric (got {x.dtype} and {y.dtype})")
    if x.ndim not in (2, 3) or y.ndim != 1:
        raise InvalidRequest(f"{name}: expected features of 2 or 3 dimensions and 1-dimensional labels, got {x.shape}")
    if len(x) != len(y):
        raise InvalidRequest(f"{name}: {len(x)} feature rows but {len(y)} labels")
    if len(y) < min_rows:
        raise InvalidRequest(f"{name}: {len(y)} rows, at least {min_rows} are needed")
    if x.shape[1] == 0:
        raise InvalidRequest(f"{name}: no feature columns")
    _check_missing(x, y, name)
    labels = y.astype(np.float64)
    if np.any(labels != np.round(labels)) or labels.min() < 0 or labels.max() >= MAX_CLASSES:
        raise InvalidRequest(
            f"{name}: labels must be whole numbers in [0, {MAX_CLASSES}), found {labels.min()}..{labels.max()}"
        )
    y64 = labels.astype(np.int64)
    num_classes = int(y64.max()) + 1
    if len(np.unique(y64)) < 2:
        raise InvalidRequest(f"{name}: all rows have the same label; at least two classes are needed")
    return Dataset(
        x=np.ascontiguousarray(x, dtype=np.float32),
        y=y64,
        kind=raw.kind,
        feature_names=raw.feature_names,
        num_classes=num_classes,
    )


def _check_missing(x: np.ndarray, y: np.ndarray, name: str) -> None:
    if y.dtype.kind == "f" and np.isnan(y).any():
        rows = np.flatnonzero(np.isnan(y))[:5] + 1
        raise InvalidRequest(f"{name}: {int(np.isnan(y).sum())} missing labels (data rows {rows.tolist()}...)")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        rows = np.flatnonzero(bad)[:5] + 1
        raise InvalidRequest(
            f"{name}: {int(bad.sum())} rows with missing or infinite values (data rows {rows.tolist()}...)"
        )
