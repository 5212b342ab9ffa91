"""What ``Client.submit`` sends: data in any form it accepts as named files, streamed as one multipart body.

Accepted data: a path (an IDX images file brings its labels file along), bytes with a filename, NumPy arrays
``(x, y)`` (sent as NPZ with keys ``x`` and ``y``), or a pandas DataFrame holding the label column (sent as CSV;
pandas is never imported here, a DataFrame is recognised by what it has).
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from functions.ml.readers import IDX_IMAGES, idx_partner
from infra.errors import InvalidRequest

CHUNK = 1024 * 1024

#: One file to send: its name and its bytes, or a local path to stream from.
File = tuple[str, bytes | Path]


def as_files(data: Any, *, dataset: str, filename: str | None, label: str) -> list[File]:
    """The files ``data`` is sent as, companions first and the run's data file last."""
    if isinstance(data, str | os.PathLike):
        return _path_files(Path(data))
    if isinstance(data, bytes | bytearray | memoryview):
        if not filename:
            raise InvalidRequest("submitting bytes needs filename= (its extension says the format: .csv, .npz, ...)")
        return [(filename, bytes(data))]
    if isinstance(data, tuple) and len(data) == 2:
        return [(filename or f"{dataset}.npz", _npz(*data))]
    if hasattr(data, "to_csv") and hasattr(data, "columns"):
        if label not in list(data.columns):
            raise InvalidRequest(f"the DataFrame has no label column {label!r} (columns: {list(data.columns)[:20]})")
        return [(filename or f"{dataset}.csv", data.to_csv(index=False).encode())]
    raise InvalidRequest(
        f"cannot submit a {type(data).__name__}: pass a path, bytes with filename=, arrays (x, y) or a DataFrame"
    )


def _path_files(path: Path) -> list[File]:
    if not path.is_file():
        raise InvalidRequest(f"{path}: no such file")
    if IDX_IMAGES in path.name:
        labels = path.with_name(idx_partner(path.name))
        if not labels.is_file():
            raise InvalidRequest(f"{path}: its labels file {labels.name} is not beside it")
        return [(labels.name, labels), (path.name, path)]
    return [(path.name, path)]


def _npz(x: Any, y: Any) -> bytes:
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
        raise InvalidRequest(
            f"arrays (x, y) need x with rows first and y one label per row; got {x.shape} and {y.shape}"
        )
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    return buffer.getvalue()


def multipart(fields: Sequence[tuple[str, str]], files: Sequence[File]) -> tuple[dict[str, str], Iterator[bytes]]:
    """Headers (content type and length) and a streamed ``multipart/form-data`` body: ``fields``, then the files as
    parts named ``data``."""
    boundary = uuid.uuid4().hex
    heads = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value.encode() + b"\r\n"
        for name, value in fields
    ]
    file_heads = [
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="data"; filename="{_quoted(name)}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        for name, _ in files
    ]
    tail = f"--{boundary}--\r\n".encode()
    sizes = [len(c) if isinstance(c, bytes) else c.stat().st_size for _, c in files]
    length = sum(map(len, heads)) + sum(map(len, file_heads)) + sum(sizes) + 2 * len(files) + len(tail)

    def body() -> Iterator[bytes]:
        yield from heads
        for head, (_, content) in zip(file_heads, files, strict=True):
            yield head
            if isinstance(content, bytes):
                yield content
            else:
                with content.open("rb") as fh:
                    yield from iter(lambda: fh.read(CHUNK), b"")
            yield b"\r\n"
        yield tail

    headers = {"content-type": f"multipart/form-data; boundary={boundary}", "content-length": str(length)}
    return headers, body()


def _quoted(name: str) -> str:
    if any(c in name for c in '"\r\n'):
        raise InvalidRequest(f"file name {name!r} cannot be sent (quotes or line breaks)")
    return name
