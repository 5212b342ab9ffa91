"""Fuzzing the readers of raw data files: CSV, NPZ, Parquet and IDX files built valid (of random shape and column
types), then changed byte-wise, are read or refused with ``InvalidRequest`` naming the file, within a deadline."""

from __future__ import annotations

import datetime
import gzip
import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given
from hypothesis import strategies as st

from functions.ml.readers import read_csv, read_idx, read_idx_pair, read_npz, read_parquet, write_idx
from infra.errors import InvalidRequest
from tests.fuzzing import fuzz, mutated_bytes, refused_or_done

REFUSED = (InvalidRequest,)
CELLS = ["1", "-2.5", "1e308", "1e999", "nan", "", "NA", "x", "red", "2026-01-01", "12:30", '"a,b"', "é", " 7 "]
HEADERS = ["label", "a", "b", "c", "", " label ", "a"]
cells = st.sampled_from(CELLS) | st.text(max_size=5)


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    """A CSV with a header (``label`` among the columns, most often) and a few rows of mixed cells."""
    header = draw(st.lists(st.sampled_from(HEADERS), min_size=1, max_size=4))
    rows = draw(st.lists(st.lists(cells, min_size=len(header), max_size=len(header)), max_size=6))
    out = io.StringIO()
    for row in [header, *rows]:
        out.write(",".join(row) + "\n")
    return out.getvalue().encode()


def _npz(arrays: dict[str, np.ndarray], compressed: bool) -> bytes:
    out = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(out, **arrays)
    return out.getvalue()


ARRAYS = {
    "float": lambda n: np.linspace(0, 1, n * 3).reshape(n, 3),
    "ints": lambda n: np.arange(n, dtype=np.int16),
    "images": lambda n: np.zeros((n, 2, 2), np.uint8),
    "scalar": lambda n: np.array(n),
    "names": lambda n: np.array(["cat", "dog"] * n)[:n],
    "bytes": lambda n: np.array([b"\xff\xfe", b"ok"] * n)[:n],
    "objects": lambda n: np.array([None, {"a": 1}] * n, dtype=object)[:n],
    "void": lambda n: np.zeros(n, dtype=[("f", "<i4"), ("g", "<f8")]),
}


@st.composite
def npz_files(draw: st.DrawFn) -> bytes:
    """An NPZ of ``x``/``y`` (or other names) of any of a few kinds of arrays; sometimes a bare ``.npy``."""
    rows = draw(st.integers(0, 4))
    names = draw(st.lists(st.sampled_from(["x", "y", "z"]), min_size=1, max_size=3, unique=True))
    arrays = {n: ARRAYS[draw(st.sampled_from(sorted(ARRAYS)))](rows) for n in names}
    if draw(st.integers(0, 5)) == 0:
        out = io.BytesIO()
        np.save(out, arrays[names[0]], allow_pickle=True)
        return out.getvalue()
    return _npz(arrays, draw(st.booleans()))


COLUMNS = {
    "int": lambda n: pa.array(range(n), pa.int64()),
    "float": lambda n: pa.array([0.5 * i for i in range(n)]),
    "bool": lambda n: pa.array([i % 2 == 0 for i in range(n)]),
    "text": lambda n: pa.array([["red", "blue", None][i % 3] for i in range(n)]),
    "dict": lambda n: pa.array(["a", "b"] * n, pa.string()).slice(0, n).dictionary_encode(),
    "date": lambda n: pa.array([datetime.date(2026, 1, 1 + i) for i in range(n)], pa.date32()),
    "time": lambda n: pa.array([i * 1000 for i in range(n)], pa.timestamp("ms")),
    "list": lambda n: pa.array([[i] for i in range(n)]),
    "null": lambda n: pa.nulls(n),
    "decimal": lambda n: pa.array([i for i in range(n)], pa.decimal128(38, 0)).cast(pa.decimal128(38, 2)),
    "binary": lambda n: pa.array([b"\xff"] * n, pa.binary()),
    "struct": lambda n: pa.array([{"a": i} for i in range(n)]),
}


@st.composite
def parquet_files(draw: st.DrawFn) -> bytes:
    """A Parquet table of a few columns of any of a few Arrow types (``label`` among them, most often)."""
    rows = draw(st.sampled_from([0, 1, 3]))
    names = draw(st.lists(st.sampled_from(["a", "b", "c"]), max_size=3, unique=True))
    names = names if draw(st.integers(0, 4)) == 0 else ["label", *names]
    table = pa.table({n: COLUMNS[draw(st.sampled_from(sorted(COLUMNS)))](rows) for n in names})
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


IDX_CODES = [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]


@st.composite
def idx_files(draw: st.DrawFn) -> bytes:
    """An IDX array of 1 to 3 dimensions with any dtype code, often gzip-compressed, its header sometimes lying."""
    shape = draw(st.lists(st.integers(0, 3), min_size=1, max_size=3))
    raw = bytearray(write_idx(np.zeros(shape, np.uint8)))
    raw[2] = draw(st.sampled_from(IDX_CODES))
    if draw(st.integers(0, 3)) == 0:
        at = 4 + 4 * draw(st.integers(0, len(shape) - 1))
        raw[at : at + 4] = draw(st.integers(0, 2**32 - 1)).to_bytes(4, "big")
    return gzip.compress(bytes(raw)) if draw(st.booleans()) else bytes(raw)


def changed(files: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """The files as built, or with a few bytes changed."""
    return files.flatmap(lambda raw: st.just(raw) | mutated_bytes(raw, most=3))


CSV_SETTINGS, CSV_BUDGET = fuzz("readers: CSV files", examples=200, seconds=5)
NPZ_SETTINGS, NPZ_BUDGET = fuzz("readers: NPZ files", examples=200, seconds=5)
PARQUET_SETTINGS, PARQUET_BUDGET = fuzz("readers: Parquet files", examples=200, seconds=6)
listed = st.lists(st.sampled_from(["a", "b", "label", "zz"]), max_size=2)


@CSV_SETTINGS
@given(raw=changed(csv_files()), categorical=listed)
def test_csv_files_are_read_or_refused_naming_the_file(raw: bytes, categorical: list[str]) -> None:
    if CSV_BUDGET.take():
        refused_or_done(lambda: read_csv(raw, "raw/d/d.csv", "label", categorical), REFUSED)


@NPZ_SETTINGS
@given(raw=changed(npz_files()))
def test_npz_files_are_read_or_refused_naming_the_file(raw: bytes) -> None:
    if NPZ_BUDGET.take():
        refused_or_done(lambda: read_npz(raw, "raw/d/d.npz"), REFUSED)


@PARQUET_SETTINGS
@given(raw=changed(parquet_files()), categorical=listed)
def test_parquet_files_are_read_or_refused_naming_the_file(raw: bytes, categorical: list[str]) -> None:
    if PARQUET_BUDGET.take():
        refused_or_done(lambda: read_parquet(raw, "raw/d/d.parquet", "label", categorical), REFUSED)


IDX_SETTINGS, IDX_BUDGET = fuzz("readers: IDX images and labels", examples=200, seconds=6)


@IDX_SETTINGS
@given(images=changed(idx_files()), labels=changed(idx_files()))
def test_idx_files_are_read_or_refused_naming_the_file(images: bytes, labels: bytes) -> None:
    if not IDX_BUDGET.take():
        return
    refused_or_done(lambda: read_idx(images, "train-images-idx3-ubyte"), REFUSED)
    pair = lambda: read_idx_pair(images, labels, "train-images-idx3-ubyte", "train-labels-idx1-ubyte")  # noqa: E731
    refused_or_done(pair, REFUSED)
