"""Readers of raw data files (CSV, NPZ, Parquet, IDX) into arrays; each raises InvalidRequest naming the file."""

from __future__ import annotations

import csv
import gzip
import io
import zipfile
from dataclasses import dataclass

import numpy as np

from infra.errors import InvalidRequest

IDX_IMAGES = "images-idx3-ubyte"
IDX_LABELS = "labels-idx1-ubyte"
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4")}


@dataclass(frozen=True)
class RawData:
    """What a reader found: features ``x`` (rows first), labels ``y``, and column names for tabular data."""

    x: np.ndarray
    y: np.ndarray
    kind: str  # "tabular" or "image"
    feature_names: tuple[str, ...] = ()


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


def read_csv(raw: bytes, name: str, label: str) -> RawData:
    """A CSV with a header row; ``label`` names the label column; every other column is a numeric feature."""
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
    width = len(header)
    for lineno, row in enumerate(rows[1:], start=2):
        if len(row) != width:
            raise InvalidRequest(f"{name}: line {lineno} has {len(row)} fields, the header has {width}")
    table = np.array(rows[1:], dtype=object)
    col = header.index(label)
    y = _numeric(table[:, col], name, f"label column {label!r}")
    feature_cols = [i for i in range(width) if i != col]
    x = np.stack([_numeric(table[:, i], name, f"column {header[i]!r}") for i in feature_cols], axis=1)
    return RawData(x=x, y=y, kind="tabular", feature_names=tuple(header[i] for i in feature_cols))


def _numeric(values: np.ndarray, name: str, what: str) -> np.ndarray:
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        text = str(v).strip()
        if text == "" or text.lower() in ("na", "nan", "null", "none"):
            out[i] = np.nan
            continue
        try:
            out[i] = float(text)
        except ValueError:
            raise InvalidRequest(f"{name}: {what} row {i + 1} is not a number: {text[:32]!r}") from None
    return out


def read_npz(raw: bytes, name: str) -> RawData:
    """An ``.npz`` archive holding arrays ``x`` (features, rows first) and ``y`` (labels)."""
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
            keys = set(archive.files)
            if not {"x", "y"} <= keys:
                raise InvalidRequest(f"{name}: an NPZ needs arrays 'x' and 'y', it holds {sorted(keys)}")
            x, y = archive["x"], archive["y"]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InvalidRequest(f"{name}: not a readable NPZ archive ({exc})") from None
    kind = "image" if x.ndim == 3 else "tabular"
    names = tuple(f"f{i}" for i in range(x.shape[1])) if x.ndim == 2 else ()
    return RawData(x=x, y=y, kind=kind, feature_names=names)


def read_parquet(raw: bytes, name: str, label: str) -> RawData:
    """A Parquet table; ``label`` names the label column, every other column is a numeric feature."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(raw))
    except (pa.ArrowException, OSError) as exc:
        raise InvalidRequest(f"{name}: not a readable Parquet file ({exc})") from None
    if label not in table.column_names:
        raise InvalidRequest(f"{name}: no label column {label!r} (columns: {', '.join(table.column_names[:20])})")
    columns = [c for c in table.column_names if c != label]
    try:
        y = table.column(label).to_numpy(zero_copy_only=False).astype(np.float64)
        x = np.stack([table.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in columns], axis=1)
    except (ValueError, TypeError, pa.ArrowException) as exc:
        raise InvalidRequest(f"{name}: a column is not numeric ({exc})") from None
    return RawData(x=x, y=y, kind="tabular", feature_names=tuple(columns))


def read_idx(raw: bytes, name: str) -> np.ndarray:
    """One IDX array (the MNIST format), gzip-compressed or not."""
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
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
