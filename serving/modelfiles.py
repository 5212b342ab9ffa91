"""Model and sample files a user registers: ONNX as is; scikit-learn (joblib/pickle), XGBoost (JSON/UBJ) and LightGBM
(text) models to convert; sample rows (CSV, NPZ, NPY) to check the conversion on."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from infra.errors import InvalidRequest

PICKLES = (".joblib", ".pkl", ".pickle")
XGBOOST = (".json", ".ubj")
LIGHTGBM = (".txt",)
MODEL_SUFFIXES = (".onnx", *PICKLES, *XGBOOST, *LIGHTGBM)
_MISSING = {"", "na", "nan", "null", "none"}


def read_model(path: Path) -> bytes | Any:
    """ONNX bytes for ``.onnx``; otherwise the model object the file holds, chosen by its suffix.

    A pickle or joblib file runs code of its author's choosing while it loads: only read files you made."""
    suffix = path.suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        raise InvalidRequest(f"{path.name}: unknown model file type (expected one of {', '.join(MODEL_SUFFIXES)})")
    if not path.is_file():
        raise InvalidRequest(f"{path}: no such file")
    if suffix == ".onnx":
        return path.read_bytes()
    if suffix in PICKLES:
        import joblib

        return _load(path, "a joblib/pickle file", lambda: joblib.load(path))
    if suffix in XGBOOST:
        xgboost = _library("xgboost", "xgboost-cpu", path)
        return _load(path, "an XGBoost model", lambda: xgboost.Booster(model_file=str(path)))
    lightgbm = _library("lightgbm", "lightgbm", path)
    return _load(path, "a LightGBM text model", lambda: lightgbm.Booster(model_file=str(path)))


def _library(module: str, package: str, path: Path) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise InvalidRequest(f"{path.name}: reading it needs the {module} package (pip install {package})") from None


def _load(path: Path, what: str, load: Any) -> Any:
    try:
        return load()
    except Exception as exc:  # any reader's failure means the file is not what its suffix says
        raise InvalidRequest(f"{path.name}: not readable as {what}: {type(exc).__name__}: {exc}"[:500]) from exc


def read_sample(path: Path) -> np.ndarray | dict[str, np.ndarray]:
    """Feature rows: a 2-D array (NPY, NPZ's ``x`` or only array, an all-numeric CSV), or columns by name (a CSV with a
    string column: the model then takes one input per column)."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise InvalidRequest(f"{path}: no such file")
    if suffix == ".csv":
        return _read_csv(path)
    if suffix not in (".npy", ".npz"):
        raise InvalidRequest(f"{path.name}: unknown sample file type (expected .csv, .npz or .npy)")
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as archive:
            return _npz_features(archive, path.name)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InvalidRequest(f"{path.name}: not a readable {suffix[1:].upper()} file ({exc})") from None


def _npz_features(archive: Any, name: str) -> np.ndarray:
    if "x" in archive.files:
        return archive["x"]
    if len(archive.files) == 1:
        return archive[archive.files[0]]
    raise InvalidRequest(f"{name}: an NPZ sample needs an array 'x' (or just one array); it holds {archive.files}")


def _read_csv(path: Path) -> np.ndarray | dict[str, np.ndarray]:
    """A header row naming the feature columns, then rows of features (no label column)."""
    try:
        rows = [r for r in csv.reader(io.StringIO(path.read_text(encoding="utf-8"))) if r]
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"{path.name}: not UTF-8 text ({exc.reason})") from None
    if len(rows) < 2:
        raise InvalidRequest(f"{path.name}: a header row and at least one row of features are needed")
    header = [h.strip() for h in rows[0]]
    for lineno, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise InvalidRequest(f"{path.name}: line {lineno} has {len(row)} fields, the header has {len(header)}")
    columns = {name: _column([row[i].strip() for row in rows[1:]]) for i, name in enumerate(header)}
    if len(columns) != len(header):
        raise InvalidRequest(f"{path.name}: the header names a column twice")
    if all(c.dtype.kind == "f" for c in columns.values()):
        return np.column_stack(list(columns.values()))
    return columns


def _column(values: list[str]) -> np.ndarray:
    """Numbers (empty / NA as NaN) when every value is one, else the strings."""
    try:
        return np.array([np.nan if v.lower() in _MISSING else float(v) for v in values])
    except ValueError:
        return np.array(values, dtype=object)
