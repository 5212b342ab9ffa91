"""The ``file://`` artifact store: objects as plain files under a root, sha256 in a sidecar, atomic renames."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from infra.errors import IntegrityError, NotFound
from infra.store import (
    CHUNK,
    HashingReader,
    ObjectInfo,
    PutAnnouncer,
    Source,
    download_verified,
    iter_source,
    read_verified,
    validate_key,
    validate_prefix,
)

META_DIR = ".knflow-meta"
TMP_DIR = ".knflow-tmp"
_RESERVED = (META_DIR, TMP_DIR)


class FileStore(PutAnnouncer):
    """Objects under ``root/<key>``; their sha256, size and metadata under ``root/.knflow-meta/<key>.json``.

    A write goes to a temporary file in the same filesystem, is fsynced, and is renamed into
    place, so a reader sees the old object or the new one, never a part. Metadata and bytes are
    renamed under an exclusive ``flock`` of ``root/.knflow-meta/<key>.lock`` and read under a shared
    one, so a reader never pairs one version's bytes with another's sha256, across processes too.
    A writer killed between the two renames leaves its metadata as ``<key>.json.next``; the next
    access of the key settles it by the bytes in place (``_settle``), so a crash never leaves an
    object that fails its integrity check.
    """

    def __init__(self, root: Path):
        super().__init__()
        self.root = Path(root).resolve()
        self.url = f"file://{self.root}"
        (self.root / TMP_DIR).mkdir(parents=True, exist_ok=True)

    # -- paths -----------------------------------------------------------------
    def _path(self, key: str) -> Path:
        validate_key(key)
        if key.split("/", 1)[0] in _RESERVED:
            raise NotFound(f"object key {key!r} is reserved by the store")
        return self.root / key

    def _meta_path(self, key: str) -> Path:
        return self.root / META_DIR / f"{key}.json"

    def _pending_meta_path(self, key: str) -> Path:
        """The metadata a put is about to give the key; left behind only by a writer that died mid-put."""
        return self.root / META_DIR / f"{key}.json.next"

    def _tempfile(self) -> tuple[int, Path]:
        fd, name = tempfile.mkstemp(dir=self.root / TMP_DIR)
        return fd, Path(name)

    # -- writing ---------------------------------------------------------------
    def put(
        self,
        key: str,
        data: Source,
        *,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
    ) -> ObjectInfo:
        return self._put(key, data, content_type, metadata, lock=True)

    def _put(
        self, key: str, data: Source, content_type: str, metadata: dict[str, str] | None, *, lock: bool
    ) -> ObjectInfo:
        """Write a temp file (outside the key's lock), then rename metadata and bytes into place under it."""
        target = self._path(key)
        digest, size = hashlib.sha256(), 0
        fd, tmp = self._tempfile()
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in iter_source(data):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            info = ObjectInfo(
                key=key,
                size=size,
                sha256=digest.hexdigest(),
                modified=datetime.now(UTC),
                content_type=content_type,
                metadata=dict(metadata or {}),
            )
            with self._locked(key, fcntl.LOCK_EX) if lock else contextlib.nullcontext():
                pending = self._pending_meta_path(key)
                self._write_meta(info, pending)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, target)
                os.replace(pending, self._meta_path(key))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)
        return self._announce(info)

    def put_if_absent(
        self, key: str, data: bytes, *, content_type: str = "application/octet-stream"
    ) -> ObjectInfo | None:
        """Create-if-absent by ``os.link`` of a complete temp file: the link fails with EEXIST if the key is taken."""
        target = self._path(key)
        fd, tmp = self._tempfile()
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(tmp, target)
            except FileExistsError:
                return None
        finally:
            tmp.unlink(missing_ok=True)
        info = ObjectInfo(
            key=key,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            modified=datetime.now(UTC),
            content_type=content_type,
        )
        self._write_meta(info)
        _fsync_dir(target.parent)
        return self._announce(info)

    def put_if_match(
        self, key: str, data: bytes, etag_or_sha: str, *, content_type: str = "application/octet-stream"
    ) -> ObjectInfo | None:
        """Compare-and-swap under the exclusive ``flock`` of the key's lock file, which every write of the key
        takes (and every read, shared): the current bytes' sha256 must be ``etag_or_sha``."""
        with self._locked(key, fcntl.LOCK_EX):
            try:
                current = hashlib.sha256(self._path(key).read_bytes()).hexdigest()
            except FileNotFoundError:
                return None
            if current != etag_or_sha:
                return None
            return self._put(key, data, content_type, None, lock=False)

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        data = self.get(key)
        return data, hashlib.sha256(data).hexdigest()

    @contextlib.contextmanager
    def _locked(self, key: str, mode: int) -> Iterator[None]:
        self._path(key)  # validates the key
        lock = self.root / META_DIR / f"{key}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with lock.open("a") as fh:
            fcntl.flock(fh.fileno(), mode)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _settle(self, key: str) -> None:
        """Finish or drop the put of a writer that died between renaming the bytes and the metadata: its pending
        metadata becomes the key's if the bytes in place are the ones it describes, else it is removed."""
        pending = self._pending_meta_path(key)
        if not pending.exists():
            return
        with self._locked(key, fcntl.LOCK_EX):  # a live writer holds it while its pending metadata exists
            try:
                recorded = json.loads(pending.read_text())["sha256"]
            except FileNotFoundError:
                return  # settled by another reader
            except (ValueError, KeyError):
                recorded = None
            path = self._path(key)
            if recorded is not None and path.is_file() and _sha256_of(path) == recorded:
                os.replace(pending, self._meta_path(key))
            else:
                pending.unlink(missing_ok=True)

    def _write_meta(self, info: ObjectInfo, meta: Path | None = None) -> None:
        """Write ``info`` whole (a temp file renamed) to the key's metadata file, or to ``meta``."""
        meta = meta or self._meta_path(info.key)
        meta.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = self._tempfile()
        with os.fdopen(fd, "w") as out:
            json.dump(
                {
                    "sha256": info.sha256,
                    "size": info.size,
                    "modified": info.modified.isoformat(),
                    "content_type": info.content_type,
                    "metadata": info.metadata,
                },
                out,
            )
        os.replace(tmp, meta)

    # -- reading ---------------------------------------------------------------
    def stat(self, key: str) -> ObjectInfo:
        self._settle(key)
        return self._stat(key)

    def _stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        if not path.is_file():
            raise NotFound(f"no object {key!r} in {self.url}")
        try:
            raw = json.loads(self._meta_path(key).read_text())
        except FileNotFoundError:
            return self._adopt(key, path)
        except ValueError:
            raise IntegrityError(f"object {key!r}: its recorded metadata is unreadable") from None
        return ObjectInfo(
            key=key,
            size=raw["size"],
            sha256=raw["sha256"],
            modified=datetime.fromisoformat(raw["modified"]),
            content_type=raw.get("content_type", "application/octet-stream"),
            metadata=raw.get("metadata", {}),
        )

    def _adopt(self, key: str, path: Path) -> ObjectInfo:
        """A file placed under the root by hand: record its digest now, so later reads are checked."""
        stat = path.stat()
        modified = datetime.fromtimestamp(stat.st_mtime, UTC)
        info = ObjectInfo(key=key, size=stat.st_size, sha256=_sha256_of(path), modified=modified)
        self._write_meta(info)
        return info

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[BinaryIO]:
        # metadata and bytes are taken together under the key's shared lock: a put renames the two in turn
        while True:
            with self._locked(key, fcntl.LOCK_SH):
                if not self._pending_meta_path(key).exists():
                    info = self._stat(key)
                    try:
                        raw = self._path(key).open("rb")
                    except FileNotFoundError:
                        raise NotFound(f"no object {key!r} in {self.url}") from None
                    break
            self._settle(key)  # a writer died mid-put: settle it under the exclusive lock, then read again
        reader = HashingReader(raw, key, info.sha256)
        try:
            yield reader  # type: ignore[misc]  # HashingReader has the read/iterate/close part of BinaryIO callers use
        finally:
            reader.close()

    def get(self, key: str) -> bytes:
        return read_verified(self, key)

    def download(self, key: str, dest: Path) -> ObjectInfo:
        info = self.stat(key)
        download_verified(self, key, dest)
        return info

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return
        keys = []
        for dirpath, dirnames, filenames in os.walk(base):
            if Path(dirpath) == self.root:
                dirnames[:] = [d for d in dirnames if d not in _RESERVED]
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        for key in sorted(keys):
            with contextlib.suppress(NotFound):
                yield self.stat(key)

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        self._meta_path(key).unlink(missing_ok=True)
        self._pending_meta_path(key).unlink(missing_ok=True)
        # prune empty parent directories up to the root
        for parent in path.parents:
            if parent == self.root:
                break
            try:
                parent.rmdir()
            except OSError:
                break


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
