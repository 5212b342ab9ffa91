"""The artifact store interface: objects by key, each with a sha256 recorded on write and checked on read.

Concurrent writers of one object use ``put_if_absent`` / ``put_if_match`` (compare-and-swap), through
``infra.cas.update`` for read-modify-write.

Backends: ``file://`` (``infra.store_file``) and ``s3://`` (``infra.store_s3``), picked by
``open_store`` from the URL scheme of the ``artifacts`` setting.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from infra.errors import ConfigError, IntegrityError, InvalidRequest
from infra.settings import StoreLocation, parse_store_url

CHUNK = 1024 * 1024
Source = bytes | bytearray | memoryview | BinaryIO | Path


@dataclass(frozen=True)
class ObjectInfo:
    """What the store knows about one object."""

    key: str
    size: int
    sha256: str
    modified: datetime
    content_type: str = "application/octet-stream"
    metadata: dict[str, str] = field(default_factory=dict)
    etag: str = ""  # the S3 ETag (without quotes) where the store has one; it changes with every version


#: Called after an object lands, with its info (the file store uses this for data-arrival events).
PutListener = Callable[[ObjectInfo], None]


@runtime_checkable
class ArtifactStore(Protocol):
    """Objects by key. Writes are atomic; reads verify the recorded sha256."""

    url: str

    def put(
        self,
        key: str,
        data: Source,
        *,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
    ) -> ObjectInfo:
        """Store bytes, a binary stream or a local file under ``key`` (streamed, never whole in memory)."""
        ...

    def put_if_absent(
        self, key: str, data: bytes, *, content_type: str = "application/octet-stream"
    ) -> ObjectInfo | None:
        """Create ``key`` only if no object holds it (atomically); ``None`` when it already existed."""
        ...

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        """The whole object, verified, and its version (the token ``put_if_match`` compares), read together."""
        ...

    def put_if_match(
        self, key: str, data: bytes, etag_or_sha: str, *, content_type: str = "application/octet-stream"
    ) -> ObjectInfo | None:
        """Replace ``key`` only if it still holds the version ``etag_or_sha`` (atomically: compare-and-swap);
        ``None`` when it holds another version or none. Versions come from ``get_versioned`` (S3: the ETag,
        file: the sha256)."""
        ...

    def open(self, key: str) -> AbstractContextManager[BinaryIO]:
        """A streaming reader; it raises ``IntegrityError`` at end of stream on a sha256 mismatch."""
        ...

    def get(self, key: str) -> bytes:
        """The whole object, verified."""
        ...

    def download(self, key: str, dest: Path) -> ObjectInfo:
        """Stream the object to ``dest`` (atomically: verified before it appears there)."""
        ...

    def stat(self, key: str) -> ObjectInfo:
        """Info of one object; ``NotFound`` if absent."""
        ...

    def exists(self, key: str) -> bool:
        """Whether ``key`` holds an object."""
        ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order."""
        ...

    def delete(self, key: str) -> None:
        """Remove an object; removing an absent one is not an error."""
        ...

    def add_listener(self, listener: PutListener) -> None:
        """Call ``listener`` after every successful put through this store object."""
        ...


class PutAnnouncer:
    """The part of a backend that tells its listeners of every object that lands (``add_listener``)."""

    def __init__(self) -> None:
        self._listeners: list[PutListener] = []

    def add_listener(self, listener: PutListener) -> None:
        self._listeners.append(listener)

    def _announce(self, info: ObjectInfo) -> ObjectInfo:
        """Call every listener with ``info`` (a put has landed); ``info``, for the put to return."""
        for listener in self._listeners:
            listener(info)
        return info


_SEGMENT = re.compile(r"^[A-Za-z0-9._=+@,:~-]+$")
MAX_KEY_BYTES = 1024


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise ``InvalidRequest``."""
    if not isinstance(key, str) or not key:
        raise InvalidRequest("object key must be a non-empty string")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidRequest(f"object key is longer than {MAX_KEY_BYTES} bytes: {key[:64]!r}...")
    if key.startswith("/") or "\\" in key:
        raise InvalidRequest(f"object key {key!r} must be relative and use '/' separators")
    for segment in key.split("/"):
        if segment == "":
            raise InvalidRequest(f"object key {key!r} has an empty path segment")
        if segment in (".", ".."):
            raise InvalidRequest(f"object key {key!r} must not contain '.' or '..' segments")
        if not _SEGMENT.match(segment):
            raise InvalidRequest(f"object key {key!r}: segment {segment!r} may hold only letters, digits and ._=+@,:~-")
    return key


def validate_prefix(prefix: str) -> str:
    """A listing prefix: empty, or a key (optionally ending in '/')."""
    if prefix:
        validate_key(prefix.rstrip("/") or "x")
    return prefix


class RawStream(Protocol):
    """What ``HashingReader`` reads from: a file, or an S3 client's HTTP response."""

    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


class HashingReader:
    """Wraps a binary stream, hashing what passes and checking the digest at end of stream."""

    def __init__(self, raw: RawStream, key: str, expected_sha256: str | None):
        self._raw = raw
        self._key = key
        self._expected = expected_sha256
        self._hash = hashlib.sha256()
        self._checked = False

    def read(self, size: int = -1) -> bytes:
        chunk = self._raw.read(size)
        if chunk:
            self._hash.update(chunk)
        if not chunk or size is None or size < 0:
            self._finish()
        return chunk

    def readable(self) -> bool:
        return True

    def _finish(self) -> None:
        if self._checked:
            return
        self._checked = True
        actual = self._hash.hexdigest()
        if self._expected and actual != self._expected:
            raise IntegrityError(
                f"object {self._key!r} failed its integrity check: sha256 {actual} "
                f"does not match the recorded {self._expected}"
            )

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(CHUNK):
            yield chunk

    def close(self) -> None:
        self._raw.close()


def iter_source(data: Source) -> Iterator[bytes]:
    """Chunks of bytes from any accepted put source."""
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data)
        for start in range(0, len(view), CHUNK):
            yield bytes(view[start : start + CHUNK])
        return
    if isinstance(data, Path):
        with data.open("rb") as fh:
            yield from iter(lambda: fh.read(CHUNK), b"")
        return
    yield from iter(lambda: data.read(CHUNK), b"")


def read_verified(store: ArtifactStore, key: str) -> bytes:
    """Shared ``get`` implementation: read through ``open`` so the digest is checked."""
    with store.open(key) as reader:
        return reader.read()


def download_verified(store: ArtifactStore, key: str, dest: Path) -> None:
    """Shared ``download`` implementation: stream to a temporary file beside ``dest``, verified, then rename."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as out, store.open(key) as reader:
            shutil.copyfileobj(reader, out, CHUNK)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def open_store(location: StoreLocation | str) -> ArtifactStore:
    """The artifact store for a location or URL (``file://`` or ``s3://``)."""
    if isinstance(location, str):
        location = parse_store_url(location)
    if location.scheme == "file":
        from infra.store_file import FileStore

        if location.path is None:
            raise ConfigError("a file:// artifact store needs a directory path")
        return FileStore(location.path)
    from infra.store_s3 import S3Store

    return S3Store(location)


class ReadOnlyStore:
    """A store that reads through to another and refuses every write: what a process that must not write holds
    (the workers of a distributed training other than rank 0)."""

    _WRITES = frozenset({"put", "put_if_absent", "put_if_match", "delete", "add_listener"})

    def __init__(self, store: ArtifactStore, who: str) -> None:
        self._store, self._who = store, who
        self.url = store.url

    def __getattr__(self, name: str) -> object:
        if name in self._WRITES:
            raise PermissionError(f"{self._who} reads the artifact store only; it cannot {name}")
        return getattr(self._store, name)


def location_of(store: ArtifactStore) -> StoreLocation:
    """Where a store keeps its objects (an S3 store's credentials included): what another process opens it by."""
    location = getattr(store, "location", None)
    return location if isinstance(location, StoreLocation) else parse_store_url(store.url)
