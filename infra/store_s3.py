"""The ``s3://`` artifact store via the ``minio`` client: multipart streaming, sha256 as object metadata, retries."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, TypeVar

import urllib3
from minio import Minio
from minio.error import S3Error

from infra.errors import IntegrityError, KnflowError, NotFound, Unavailable
from infra.settings import StoreLocation
from infra.store import (
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

log = logging.getLogger(__name__)
T = TypeVar("T")

SHA_META = "sha256"
PART_SIZE = 8 * 1024 * 1024
RETRIES = 4
BACKOFF_S = 0.2
_TRANSIENT_CODES = {
    "InternalError",
    "SlowDown",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "OperationAborted",
}
_TRANSIENT_EXC = (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)


class S3Store(PutAnnouncer):
    """Objects in one bucket. Uploads are multipart and streamed; the sha256 rides as ``x-amz-meta-sha256``."""

    def __init__(self, location: StoreLocation, *, retries: int = RETRIES):
        super().__init__()
        self.location = location
        self.retries = retries
        self.bucket = location.bucket
        self.url = location.url
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5.0, read=60.0),
            maxsize=16,
            retries=urllib3.Retry(total=0, redirect=0, raise_on_status=False),
        )
        self.client = Minio(
            location.endpoint,
            access_key=location.access_key,
            secret_key=location.secret_key,
            secure=location.secure,
            region=location.region,
            http_client=http,
        )
        if location.create:
            self._retry("create bucket", self._ensure_bucket)

    def _ensure_bucket(self) -> None:
        if not self.client.bucket_exists(self.bucket):
            with contextlib.suppress(S3Error):
                self.client.make_bucket(self.bucket)

    # -- error handling --------------------------------------------------------
    def _retry(self, what: str, call: Callable[[], T], key: str | None = None) -> T:
        """Run ``call``, retrying transient S3 and network errors with exponential backoff."""
        for attempt in range(self.retries + 1):
            try:
                return call()
            except S3Error as exc:
                if exc.code not in _TRANSIENT_CODES or attempt == self.retries:
                    raise self._translate(exc, key) from None
                reason = exc.code
            except _TRANSIENT_EXC as exc:
                if attempt == self.retries:
                    raise Unavailable(
                        f"S3 endpoint {self.location.endpoint} unreachable during {what}: {exc}"
                    ) from None
                reason = type(exc).__name__
            delay = BACKOFF_S * 2**attempt
            log.warning("s3 %s failed (%s); retrying in %.1fs", what, reason, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _translate(self, exc: S3Error, key: str | None) -> KnflowError:
        if exc.code == "NoSuchBucket":
            return NotFound(
                f"bucket {self.bucket!r} does not exist at {self.location.endpoint}; create it "
                f"or add '&create=true' to the artifacts URL"
            )
        if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound") or (
            exc.response is not None and exc.response.status == 404
        ):
            return NotFound(f"no object {key!r} in {self.url}")
        if exc.code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return KnflowError(f"S3 refused access to {self.url}: {exc.code} ({exc.message})", status=502)
        return KnflowError(
            f"S3 error on {key or self.bucket!r}: {exc.code} ({exc.message})",
            status=502,
            retryable=exc.code in _TRANSIENT_CODES,
        )

    # -- writing ---------------------------------------------------------------
    def put(
        self,
        key: str,
        data: Source,
        *,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
    ) -> ObjectInfo:
        validate_key(key)
        with contextlib.ExitStack() as stack:
            path, sha, size = self._spool(data, stack)
            meta: dict[str, str | list[str] | tuple[str]] = {**(metadata or {}), SHA_META: sha}
            self._retry(
                f"put {key}",
                lambda: self.client.fput_object(
                    self.bucket,
                    key,
                    str(path),
                    content_type=content_type,
                    metadata=meta,
                    part_size=PART_SIZE,
                    num_parallel_uploads=1,
                ),
                key,
            )
        info = ObjectInfo(
            key=key,
            size=size,
            sha256=sha,
            modified=datetime.now(UTC),
            content_type=content_type,
            metadata=dict(metadata or {}),
        )
        return self._announce(info)

    def put_if_absent(
        self, key: str, data: bytes, *, content_type: str = "application/octet-stream"
    ) -> ObjectInfo | None:
        """Create-if-absent with an S3 conditional write (``If-None-Match: *``); 412 means the key was taken."""
        return self._conditional_put(key, data, content_type, {"If-None-Match": "*"})

    def put_if_match(
        self, key: str, data: bytes, etag_or_sha: str, *, content_type: str = "application/octet-stream"
    ) -> ObjectInfo | None:
        """Compare-and-swap with an S3 conditional write (``If-Match: <ETag>``); 412 means another version is there
        (SeaweedFS honours it, as AWS S3 and MinIO do)."""
        return self._conditional_put(key, data, content_type, {"If-Match": etag_or_sha})

    def _conditional_put(self, key: str, data: bytes, content_type: str, condition: dict) -> ObjectInfo | None:
        validate_key(key)
        sha = hashlib.sha256(data).hexdigest()
        headers = {**condition, "Content-Type": content_type, f"x-amz-meta-{SHA_META}": sha}
        try:
            self._retry(
                f"conditional put {key}",
                lambda: self.client._execute("PUT", self.bucket, key, body=data, headers=headers),
                key,
            )
        except KnflowError as exc:
            if "PreconditionFailed" in exc.message or "ConditionalRequestConflict" in exc.message:
                return None
            raise
        info = ObjectInfo(key=key, size=len(data), sha256=sha, modified=datetime.now(UTC), content_type=content_type)
        return self._announce(info)

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        """One GET: the body (checked against its recorded sha256) and the ETag it was served with."""
        validate_key(key)

        def fetch() -> tuple[bytes, str, str | None]:
            response = self.client.get_object(self.bucket, key)
            try:
                return response.read(), response.headers.get("etag", ""), response.headers.get(f"x-amz-meta-{SHA_META}")
            finally:
                response.close()
                response.release_conn()

        data, etag, recorded = self._retry(f"get {key}", fetch, key)
        if recorded and hashlib.sha256(data).hexdigest() != recorded:
            raise IntegrityError(f"object {key!r} failed its integrity check against its recorded sha256")
        return data, etag

    @staticmethod
    def _spool(data: Source, stack: contextlib.ExitStack) -> tuple[Path, str, int]:
        """A local, re-readable file holding ``data`` (so retries can resend it) and its digest."""
        digest, size = hashlib.sha256(), 0
        if isinstance(data, Path):
            for chunk in iter_source(data):
                digest.update(chunk)
                size += len(chunk)
            return data, digest.hexdigest(), size
        fd, name = tempfile.mkstemp(prefix="knflow-s3-")
        stack.callback(os.unlink, name)
        with os.fdopen(fd, "wb") as out:
            for chunk in iter_source(data):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        return Path(name), digest.hexdigest(), size

    # -- reading ---------------------------------------------------------------
    def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        obj = self._retry(f"stat {key}", lambda: self.client.stat_object(self.bucket, key), key)
        meta = {k.lower(): v for k, v in (obj.metadata or {}).items()}
        user = {k[len("x-amz-meta-") :]: v for k, v in meta.items() if k.startswith("x-amz-meta-")}
        sha = user.pop(SHA_META, "")
        return ObjectInfo(
            key=key,
            size=obj.size or 0,
            sha256=sha,
            modified=obj.last_modified or datetime.now(UTC),
            content_type=obj.content_type or "application/octet-stream",
            metadata=user,
            etag=(obj.etag or "").strip('"'),
        )

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[BinaryIO]:
        validate_key(key)
        response = self._retry(f"get {key}", lambda: self.client.get_object(self.bucket, key), key)
        try:
            expected = response.headers.get(f"x-amz-meta-{SHA_META}")
            yield HashingReader(response, key, expected)  # type: ignore[misc]  # read/iterate/close part of BinaryIO
        finally:
            response.close()
            response.release_conn()

    def get(self, key: str) -> bytes:
        return read_verified(self, key)

    def download(self, key: str, dest: Path) -> ObjectInfo:
        download_verified(self, key, dest)
        return self.stat(key)

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except NotFound:
            return False
        return True

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects under ``prefix`` (ListObjectsV2); ``sha256`` and ``metadata`` are filled in only by ``stat`` (S3
        listings omit them)."""
        validate_prefix(prefix)
        objects = self._retry(
            f"list {prefix}",
            lambda: list(self.client.list_objects(self.bucket, prefix=prefix or None, recursive=True)),
        )
        for obj in sorted(objects, key=lambda o: o.object_name or ""):
            if obj.is_dir:
                continue
            yield ObjectInfo(
                key=obj.object_name or "",
                size=obj.size or 0,
                sha256="",
                modified=obj.last_modified or datetime.now(UTC),
                etag=(obj.etag or "").strip('"'),
            )

    def delete(self, key: str) -> None:
        validate_key(key)
        self._retry(f"delete {key}", lambda: self.client.remove_object(self.bucket, key), key)
