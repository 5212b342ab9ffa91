"""Checks that raw arrays make a usable data set for the run's task, and their conversion to typed arrays: class
names or numbers become class indices (classification), a numeric target stays real-valued (regression)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from functions.ml.columns import CATEGORICAL, Column, parse_numbers
from functions.ml.metrics import CLASSIFICATION, REGRESSION
from functions.ml.readers import RawData
from infra.errors import InvalidRequest

MIN_ROWS = 20
MAX_CLASSES = 1000


@dataclass(frozen=True)
class Dataset:
    """A validated data set: float32 numeric features, categorical features as str, and int64 class indices in
    ``0..num_classes-1`` (classification) or float32 targets (regression)."""

    x: np.ndarray
    y: np.ndarray
    kind: str
    feature_names: tuple[str, ...]  # the columns of x
    num_classes: int  # 0 for regression
    task: str = CLASSIFICATION
    classes: tuple = ()  # what each class index stands for: class names (str) or the label numbers (int)
    c: np.ndarray | None = None  # categorical features, rows by columns of str
    columns: tuple[Column, ...] = ()  # every feature column in file order (tabular data)

    @property
    def categorical_names(self) -> tuple[str, ...]:
        return tuple(col.name for col in self.columns if col.type == CATEGORICAL)


def validate(raw: RawData, name: str, *, task: str = CLASSIFICATION, min_rows: int = MIN_ROWS) -> Dataset:
    """Check shape, dtypes, missing values, labels and row count for ``task``; raise InvalidRequest with the reason."""
    x, y = raw.x, raw.y
    if x.dtype.kind not in "biuf":
        raise InvalidRequest(f"{name}: features must be numeric (got {x.dtype})")
    if x.ndim not in (2, 3) or y.ndim != 1:
        raise InvalidRequest(f"{name}: expected features of 2 or 3 dimensions and 1-dimensional labels, got {x.shape}")
    if len(x) != len(y):
        raise InvalidRequest(f"{name}: {len(x)} feature rows but {len(y)} labels")
    if len(y) < min_rows:
        raise InvalidRequest(f"{name}: {len(y)} rows, at least {min_rows} are needed")
    if x.shape[1] == 0 and raw.c is None:
        raise InvalidRequest(f"{name}: no feature columns")
    _check_missing_features(x, raw.feature_names, name)
    if task == REGRESSION:
        targets, classes = regression_targets(y, raw.label, name), ()
    else:
        targets, classes = class_indices(y, raw.label, name)
    return Dataset(
        x=np.ascontiguousarray(x, dtype=np.float32),
        y=targets,
        kind=raw.kind,
        feature_names=raw.feature_names,
        num_classes=len(classes),
        task=task,
        classes=classes,
        c=raw.c,
        columns=raw.columns,
    )


def class_indices(y: np.ndarray, label: str, name: str) -> tuple[np.ndarray, tuple]:
    """Class indices and what each stands for: sorted class names for text labels, ``0..max`` for numbers."""
    _check_missing_labels(y, label, name)
    if y.dtype == object:
        classes, indices = np.unique(np.asarray(y.tolist(), dtype=str), return_inverse=True)
        if len(classes) > MAX_CLASSES:
            raise InvalidRequest(
                f"{name}: label column {label!r} holds {len(classes)} distinct values, more than {MAX_CLASSES} classes "
                f"(a real-valued target? set the run option task: regression)"
            )
        names: tuple = tuple(str(c) for c in classes)
        _check_two_classes(names, label, name)
        return indices.astype(np.int64), names
    if y.dtype.kind not in "biuf":
        raise InvalidRequest(f"{name}: labels must be numbers or text (got {y.dtype})")
    labels = y.astype(np.float64)
    if np.any(labels != np.round(labels)) or labels.min() < 0 or labels.max() >= MAX_CLASSES:
        raise InvalidRequest(
            f"{name}: labels must be whole numbers in [0, {MAX_CLASSES}) or class names, found "
            f"{labels.min()}..{labels.max()} in label column {label!r} (a real-valued target? set the run option "
            f"task: regression)"
        )
    indices = labels.astype(np.int64)
    _check_two_classes(tuple(np.unique(indices).tolist()), label, name)
    return indices, tuple(range(int(indices.max()) + 1))


def regression_targets(y: np.ndarray, label: str, name: str) -> np.ndarray:
    """A regression target as float32: numbers only, none missing, not all the same."""
    if y.dtype == object:
        _, bad = parse_numbers(["" if v is None else str(v) for v in y])
        row = bad[0]
        raise InvalidRequest(
            f"{name}: regression target {label!r} is not numeric: data row {row + 1} holds {str(y[row])[:32]!r}"
        )
    if y.dtype.kind not in "biuf":
        raise InvalidRequest(f"{name}: regression target {label!r} must be numeric (got {y.dtype})")
    _check_missing_labels(y, label, name)
    targets = y.astype(np.float64)
    if not np.isfinite(targets).all():
        raise InvalidRequest(f"{name}: regression target {label!r} has infinite values")
    if targets.min() == targets.max():
        raise InvalidRequest(f"{name}: regression target {label!r} is {targets[0]} in every row; nothing to learn")
    return targets.astype(np.float32)


def _check_two_classes(classes: tuple, label: str, name: str) -> None:
    if len(classes) < 2:
        raise InvalidRequest(
            f"{name}: label column {label!r} holds one class ({classes[0]!r}) in every row; at least two are needed"
        )


def _check_missing_labels(y: np.ndarray, label: str, name: str) -> None:
    missing = np.asarray([v is None for v in y]) if y.dtype == object else np.isnan(y.astype(np.float64))
    if missing.any():
        rows = np.flatnonzero(missing)[:5] + 1
        raise InvalidRequest(
            f"{name}: {int(missing.sum())} missing labels in column {label!r} (data rows {rows.tolist()}...)"
        )


def _check_missing_features(x: np.ndarray, names: tuple[str, ...], name: str) -> None:
    if x.dtype.kind != "f" or np.isfinite(x).all():
        return
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    rows = np.flatnonzero(bad)[:5] + 1
    columns = ""
    if names and x.ndim == 2:
        where = [names[i] for i in np.flatnonzero(~np.isfinite(x).all(axis=0))[:5]]
        columns = f" in columns {where}"
    raise InvalidRequest(
        f"{name}: {int(bad.sum())} rows with missing or infinite values{columns} (data rows {rows.tolist()}...)"
    )
