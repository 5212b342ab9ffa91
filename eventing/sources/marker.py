"""What the S3 arrival sources have announced: the object versions (key → ETag) seen, persisted and bounded.

The polling source and MinIO's notifications share one marker, so with both running an object version is announced
by whichever sees it first and never by the other (``claim`` is atomic across threads). The marker remembers at most
``max_keys`` versions: past that it forgets the oldest by modification time and keeps a horizon instead, at or before
which an object counts as seen. Entries of objects gone from the bucket are pruned after each listing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

from infra.atomic import write_json

log = logging.getLogger(__name__)
VERSION = 1


class ArrivalMarker:
    """Object versions already looked at (announced, or skipped on purpose), kept in ``path``."""

    def __init__(self, path: Path, max_keys: int):
        self.path, self.max_keys = Path(path), max(1, max_keys)
        self.horizon = 0.0  # objects modified at or before this (epoch seconds) count as seen
        self.started = False  # whether a first listing has been recorded (the baseline)
        self._seen: dict[str, tuple[str, float, float]] = {}  # key -> (etag, modified, recorded at)
        self._lock = threading.Lock()
        self._dirty = False

    @classmethod
    def load(cls, path: Path, max_keys: int) -> ArrivalMarker:
        """The marker stored at ``path``, or a new one (not started) when there is none or it cannot be read."""
        marker = cls(path, max_keys)
        if not marker.path.is_file():
            return marker
        try:
            stored = json.loads(marker.path.read_text())
            marker.horizon, marker.started = float(stored["horizon"]), bool(stored["started"])
            marker._seen = {k: (str(v[0]), float(v[1]), float(v[2])) for k, v in stored["seen"].items()}
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            # A damaged marker is started again: objects already there are taken as seen, none announced twice.
            log.warning("arrival marker %s cannot be read (%s); starting a new one", marker.path, exc)
            return cls(path, max_keys)
        return marker

    def __len__(self) -> int:
        return len(self._seen)

    def is_new(self, key: str, etag: str, modified: float) -> bool:
        """Whether this version of ``key`` has not been looked at yet."""
        with self._lock:
            return self._is_new(key, etag, modified)

    def _is_new(self, key: str, etag: str, modified: float) -> bool:
        seen = self._seen.get(key)
        return (seen is None or seen[0] != etag) and modified > self.horizon

    def claim(self, key: str, etag: str, modified: float | None = None) -> bool:
        """Record this version and say True, unless it was already recorded (then False): the caller announces it."""
        modified = time.time() if modified is None else modified
        with self._lock:
            if not self._is_new(key, etag, modified):
                return False
            self._record(key, etag, modified)
            return True

    def record(self, key: str, etag: str, modified: float) -> None:
        """Record a version looked at and not announced (an ignored name, an object its writer announced)."""
        with self._lock:
            self._record(key, etag, modified)

    def forget(self, key: str, etag: str) -> None:
        """Undo a ``claim`` whose announcement failed, so that it is tried again."""
        with self._lock:
            if self._seen.get(key, ("",))[0] == etag:
                del self._seen[key]
                self._dirty = True

    def _record(self, key: str, etag: str, modified: float) -> None:
        self._seen[key] = (etag, modified, time.time())
        self._dirty = True

    def prune(self, present: set[str], listed_at: float) -> None:
        """Forget objects a listing started at ``listed_at`` no longer holds (those recorded since may be newer)."""
        with self._lock:
            gone = [k for k, v in self._seen.items() if k not in present and v[2] < listed_at]
            for key in gone:
                del self._seen[key]
            self._dirty = self._dirty or bool(gone)

    def save(self) -> None:
        """Write the marker if it changed, first bounding it to ``max_keys`` versions."""
        with self._lock:
            if not self._dirty:
                return
            self._bound()
            state = {"version": VERSION, "horizon": self.horizon, "started": self.started, "seen": dict(self._seen)}
            self._dirty = False
        write_json(self.path, state)

    def start(self) -> None:
        """Mark the first listing as recorded: from now on new versions are announced."""
        with self._lock:
            self.started, self._dirty = True, True

    def _bound(self) -> None:
        excess = len(self._seen) - self.max_keys
        if excess <= 0:
            return
        oldest = sorted(self._seen.items(), key=lambda item: item[1][1])[:excess]
        for key, (_, modified, _) in oldest:
            del self._seen[key]
            self.horizon = max(self.horizon, modified)
        log.info(
            "arrival marker keeps the newest %d versions; objects modified by %.0f count as seen",
            self.max_keys,
            self.horizon,
        )
