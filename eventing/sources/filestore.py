"""Data arrival for the ``file://`` artifact store, across processes: the broker watches the arrival prefix itself.

Any process (the CLI, a function, ``cp`` through ``FileStore.put``) writes an object under
``eventing.arrival_prefix``; the broker process scans the store's prefix every ``eventing.watch_interval_s``
and publishes an ``eventing.arrival_type`` event for each object version it has not seen (the same
event a MinIO bucket notification gives), except objects ``arrival.announces`` skips (ignored names,
objects whose writer announced them itself). What it has seen (key -> sha256) is journaled in the
broker's data dir *after* publishing, so an arrival is never lost across a broker restart (at
worst re-published, with the same event id). Objects already there when the journal is first
created are announced too: data dropped while no broker ran still starts its run.
In the broker's own process, ``attach(store)`` adds a put listener that wakes the scan at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from eventing.sources.arrival import announces, arrival_event
from infra.aio import cancel_and_wait
from infra.atomic import write_json
from infra.settings import EventingSettings
from infra.store import ArtifactStore, ObjectInfo
from infra.store_file import FileStore

log = logging.getLogger(__name__)


class FileStoreWatcher:
    """Publishes an arrival event for every new object version under ``prefix`` of the file store at ``root``."""

    def __init__(self, root: Path, state_path: Path, config: EventingSettings):
        self.store = FileStore(root)
        self.config = config
        self.state_path, self.prefix, self.interval_s = Path(state_path), config.arrival_prefix, config.watch_interval_s
        self._seen: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def routes(self) -> list[web.RouteDef]:
        return []

    def attach(self, store: ArtifactStore) -> None:
        """Scan at once after every put through ``store`` (a store object of this process)."""
        store.add_listener(self._on_put)

    def _on_put(self, info: ObjectInfo) -> None:
        if info.key.startswith(self.prefix) and self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def start(self, publish: Any) -> None:
        self._loop = asyncio.get_running_loop()
        if self.state_path.is_file():
            self._seen = json.loads(self.state_path.read_text())
        self._task = asyncio.create_task(self._run(publish), name="filestore-watcher")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _run(self, publish: Any) -> None:
        while True:
            try:
                await self.scan(publish)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scanning %s in %s failed", self.prefix, self.store.url)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()

    async def scan(self, publish: Any) -> int:
        """Publish every unseen object version once; returns how many were published."""
        found = await asyncio.get_running_loop().run_in_executor(None, lambda: list(self.store.list(self.prefix)))
        fresh = [info for info in found if self._seen.get(info.key) != info.sha256]
        announced = 0
        for info in fresh:
            if announces(self.config, info.key, info.metadata):
                bucket = self.store.root.name
                event = arrival_event(
                    self.config, "knflow/filestore", bucket, info.key, info.size, info.sha256, self.store.url
                )
                await publish(event)
                announced += 1
            self._seen[info.key] = info.sha256  # skipped ones too: they are looked at once
        if fresh:
            self._save()
            log.info(
                "announced %d of %d new object(s) under %s in %s", announced, len(fresh), self.prefix, self.store.url
            )
        return announced

    def _save(self) -> None:
        write_json(self.state_path, self._seen)
