"""Content-addressed versions in the store: parts first, a manifest last, so a half-written version is never seen."""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import numpy as np

from infra.store import ArtifactStore

MANIFEST = "summary.json"


def content_hash(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> str:
    """A sha256 over the arrays' names, dtypes, shapes and bytes plus canonical JSON metadata."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{arr.dtype.str}:{arr.shape};".encode())
        digest.update(arr.tobytes())
    digest.update(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode())
    return digest.hexdigest()


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """Arrays as NPZ bytes."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub: a key could be allow_pickle
    return buf.getvalue()


def load_npz(store: ArtifactStore, key: str) -> dict[str, np.ndarray]:
    """Every array of an NPZ object."""
    with np.load(io.BytesIO(store.get(key)), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def json_bytes(value: Any) -> bytes:
    """Canonical, readable JSON bytes."""
    return json.dumps(value, indent=1, sort_keys=True).encode()


def put_json(store: ArtifactStore, key: str, value: Any) -> None:
    """One JSON object (atomic, as every store write is)."""
    store.put(key, json_bytes(value), content_type="application/json")


def get_json(store: ArtifactStore, key: str) -> Any:
    """One JSON object."""
    return json.loads(store.get(key))


def write_version(store: ArtifactStore, prefix: str, parts: dict[str, bytes], manifest: dict[str, Any]) -> bool:
    """Write ``parts`` under ``prefix`` and the manifest last; False when the version was already complete."""
    if store.exists(prefix + MANIFEST):
        return False
    for name, blob in parts.items():
        store.put(
            prefix + name,
            blob,
            content_type="application/json" if name.endswith(".json") else "application/octet-stream",
        )
    put_json(store, prefix + MANIFEST, manifest)
    return True


def is_complete(store: ArtifactStore, prefix: str) -> bool:
    """Whether a version's manifest (written last) exists."""
    return store.exists(prefix + MANIFEST)
