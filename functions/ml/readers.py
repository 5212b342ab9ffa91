"""Readers of raw data files (CSV, NPZ, Parquet, IDX) into arrays; each raises InvalidRequest naming the file."""

from __future__ import annotations

import csv
import gzip
import io
import tokenize
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from functions.ml.columns import CATEGORICAL, NUMERIC, Column, date_column, is_missing, parse_numbers, type_column
from infra.errors import InvalidRequest

IDX_IMAGES = "images-idx3-ubyte"
IDX_LABELS = "labels-idx1-ubyte"
# what NumPy and zipfile raise on damaged archives: NumPy parses each member's header as a Python literal
# (SyntaxError, TokenError); zipfile refuses unknown compression (NotImplementedError) and encryption (RuntimeError)
_NPZ_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    ValueError,
    EOFError,
    SyntaxError,
    tokenize.TokenError,
    zlib.error,
    NotImplementedError,
)
_NPZ_ERRORS += (RuntimeError, zipfile.BadZipFile)
_IDX_DTYPES: dict[int, DTypeLike] = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
}


@dataclass(frozen=True)
class RawData:
    """What a reader found: numeric features ``x`` (rows first), labels ``y`` as read (numbers, or text in an object
    array with None where missing), categorical features ``c`` (rows by columns of str, or None), and for tabular
    data every feature column in file order."""

    x: np.ndarray
    y: np.ndarray
    kind: str  # "tabular" or "image"
    feature_names: tuple[str, ...] = ()  # the columns of x
    c: np.ndarray | None = None
    columns: tuple[Column, ...] = ()
    label: str = "label"


def format_of(key: str) -> str:
    """The file format a key names, from its extension (``.gz`` allowed for IDX)."""
    name = key.rsplit("/", 1)[-1].lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if IDX_IMAGES in name or IDX_LABELS in name or name.endswith((".idx3-ubyte", ".idx1-ubyte")):
        return "idx"
    for ext in ("csv", "npz", "parquet"):
        if name.endswith("." + ext):
            return ext
    raise InvalidRequest(f"{key}: unsupported file type (expected .csv, .npz, .parquet or IDX images/labels)")


def idx_partner(images_key: str) -> str:
    """The labels object that sits beside an IDX images object."""
    return images_key.replace(IDX_IMAGES, IDX_LABELS)


def read_csv(raw: bytes, name: str, label: str, categorical: Sequence[str] = ()) -> RawData:
    """A CSV with a header row; ``label`` names the label column; every other column is a feature, numeric or
    categorical (text, or listed in ``categorical``)."""
    try:
        rows = list(csv.reader(io.StringIO(raw.decode("utf-8"))))
    except csv.Error as exc:  # e.g. a field over the csv module's limit (131,072 characters)
        raise InvalidRequest(f"{name}: not a CSV file knflow can read: {exc}") from None
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"{name}: not UTF-8 text ({exc.reason})") from None
    rows = [r for r in rows if r]
    if len(rows) < 2:
        raise InvalidRequest(f"{name}: no data rows (a header row and at least one data row are needed)")
    header = [h.strip() for h in rows[0]]
    if label not in header:
        raise InvalidRequest(f"{name}: no label column {label!r} (columns: {', '.join(header[:20])})")
    _check_listed(categorical, header, label, name)
    width = len(header)
    for lineno, row in enumerate(rows[1:], start=2):
        if len(row) != width:
            raise InvalidRequest(f"{name}: line {lineno} has {len(row)} fields, the header has {width}")
    cells = [[cell.strip() for cell in column] for column in zip(*rows[1:], strict=True)]
    col = header.index(label)
    typed = {
        header[i]: type_column(header[i], cells[i], categorical=header[i] in categorical, where=name)
        for i in range(width)
        if i != col
    }
    return _tabular(typed, label_values(cells[col]), label, len(rows) - 1)


def label_values(cells: Sequence[str]) -> np.ndarray:
    """A label column's cells: float64 when every present cell is a number (missing → NaN), else text (an object
    array, None where missing)."""
    numbers, bad = parse_numbers(cells)
    if not bad:
        return numbers
    return np.asarray([None if is_missing(v) else v for v in cells], dtype=object)


def _check_listed(categorical: Sequence[str], header: Sequence[str], label: str, name: str) -> None:
    unknown = [c for c in categorical if c not in header or c == label]
    if unknown:
        raise InvalidRequest(
            f"{name}: the run option 'categorical' names {unknown}, which are not feature columns of the file "
            f"(columns: {', '.join(h for h in header[:20] if h != label)})"
        )


def _tabular(typed: dict[str, tuple[str, np.ndarray]], y: np.ndarray, label: str, rows: int) -> RawData:
    """RawData from typed feature columns (in file order) and the label values."""
    numeric = [n for n, (t, _) in typed.items() if t == NUMERIC]
    categories = [n for n, (t, _) in typed.items() if t == CATEGORICAL]
    x = np.stack([typed[n][1] for n in numeric], axis=1) if numeric else np.empty((rows, 0))
    c = np.stack([typed[n][1] for n in categories], axis=1) if categories else None
    columns = tuple(Column(n, t) for n, (t, _) in typed.items())
    return RawData(x=x, y=y, kind="tabular", feature_names=tuple(numeric), c=c, columns=columns, label=label)


def read_npz(raw: bytes, name: str) -> RawData:
    """An ``.npz`` archive holding arrays ``x`` (features, rows first) and ``y`` (labels)."""
    try:
        loaded = np.load(io.BytesIO(raw), allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a bare .npy array
            raise InvalidRequest(f"{name}: an NPZ archive is needed, this is a single NumPy array (.npy)")
        with loaded as archive:
            keys = set(archive.files)
            if not {"x", "y"} <= keys:
                raise InvalidRequest(f"{name}: an NPZ needs arrays 'x' and 'y', it holds {sorted(keys)}")
            x, y = archive["x"], archive["y"]
            if y.dtype.kind in "US":  # class names
                y = np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in y.tolist()], dtype=object)
    except _NPZ_ERRORS as exc:
        raise InvalidRequest(f"{name}: not a readable NPZ archive ({type(exc).__name__}: {exc})") from None
    kind = "image" if x.ndim == 3 else "tabular"
    names = tuple(f"f{i}" for i in range(x.shape[1])) if x.ndim == 2 else ()
    return RawData(x=x, y=y, kind=kind, feature_names=names)


def read_parquet(raw: bytes, name: str, label: str, categorical: Sequence[str] = ()) -> RawData:
    """A Parquet table; ``label`` names the label column; number and boolean columns are numeric features, string
    columns (or those listed in ``categorical``) categorical ones."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(raw))
    except (pa.ArrowException, OSError) as exc:
        raise InvalidRequest(f"{name}: not a readable Parquet file ({exc})") from None
    if label not in table.column_names:
        raise InvalidRequest(f"{name}: no label column {label!r} (columns: {', '.join(table.column_names[:20])})")
    _check_listed(categorical, table.column_names, label, name)
    typed = {
        column: _parquet_column(table.column(column), column, column in categorical, name)
        for column in table.column_names
        if column != label
    }
    return _tabular(typed, _parquet_label(table.column(label), label, name), label, table.num_rows)


def _parquet_column(column: Any, title: str, categorical: bool, name: str) -> tuple[str, np.ndarray]:
    import pyarrow as pa

    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = column.cast(kind.value_type), kind.value_type
    if pa.types.is_temporal(kind):
        raise date_column(title, str(column[0]) if len(column) else "", name)
    if _numeric_type(kind) and not categorical:
        return NUMERIC, column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    if _numeric_type(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind):
        cells = ["" if v is None else str(v).strip() for v in column.to_pylist()]
        return type_column(title, cells, categorical=categorical, where=name)
    raise InvalidRequest(f"{name}: column {title!r} has type {kind}, which is not supported as a feature")


def _parquet_label(column: Any, title: str, name: str) -> np.ndarray:
    import pyarrow as pa

    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = column.cast(kind.value_type), kind.value_type
    if _numeric_type(kind):
        return column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return label_values(["" if v is None else str(v).strip() for v in column.to_pylist()])
    raise InvalidRequest(f"{name}: label column {title!r} has type {kind}; labels must be numbers or text")


def _numeric_type(kind: Any) -> bool:
    import pyarrow as pa

    types = pa.types
    return types.is_integer(kind) or types.is_floating(kind) or types.is_boolean(kind) or types.is_decimal(kind)


def read_idx(raw: bytes, name: str) -> np.ndarray:
    """One IDX array (the MNIST format), gzip-compressed or not."""
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise InvalidRequest(f"{name}: corrupt gzip stream ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise InvalidRequest(f"{name}: not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise InvalidRequest(f"{name}: IDX header is truncated")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise InvalidRequest(f"{name}: IDX body holds {len(raw) - header} bytes, its header {shape} needs {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def read_idx_pair(images: bytes, labels: bytes, images_name: str, labels_name: str) -> RawData:
    """An IDX images file (N, H, W) and its labels file (N)."""
    x = read_idx(images, images_name)
    y = read_idx(labels, labels_name)
    if x.ndim != 3:
        raise InvalidRequest(f"{images_name}: IDX images must be 3-dimensional (N, H, W), got shape {x.shape}")
    if y.ndim != 1:
        raise InvalidRequest(f"{labels_name}: IDX labels must be 1-dimensional, got shape {y.shape}")
    return RawData(x=x, y=y, kind="image")


def write_idx(array: np.ndarray) -> bytes:
    """Encode an unsigned-byte array as IDX (used to publish data sets and in tests)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()
