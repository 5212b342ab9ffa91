"""The activator: per-revision replica pools that hold requests while a replica starts and balance in-flight load."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path

from infra.errors import KnflowError, Unavailable
from infra.forkserver import ForkServer
from serving import dataplane
from serving.autoscaler import Kpa, ScalePolicy
from serving.metrics import Metrics
from serving.registry import ModelCard
from serving.replica import ReplicaSpec
from serving.replicas import NotStarted, ReplicaClient
from serving.revisions import Revision

log = logging.getLogger(__name__)
#: How long a forked replica may take to load its model (independent of how long a request waits).
REPLICA_START_TIMEOUT_S = 60.0

#: Fetches (and verifies) the revision's model to local disk; returns its card and path.
Fetcher = Callable[[Revision], Awaitable[tuple[ModelCard, Path]]]


class RevisionPool:
    """0..N replicas of one revision, with a bounded queue of requests waiting for the first one."""

    def __init__(
        self,
        revision: Revision,
        *,
        forks: ForkServer,
        fetch: Fetcher,
        socket_dir: Path,
        policy: ScalePolicy,
        queue_limit: int,
        activation_timeout_s: float,
        metrics: Metrics | None = None,
    ):
        self.revision = revision
        self.forks = forks
        self.fetch = fetch
        self.socket_dir = socket_dir
        self.kpa = Kpa(policy)
        self.queue_limit = queue_limit
        self.activation_timeout_s = activation_timeout_s
        self.metrics = metrics or Metrics()
        self.replicas: list[ReplicaClient] = []
        self.starting = 0
        self.waiting = 0
        self.inflight = 0
        self.ready = asyncio.Event()
        self.failure: KnflowError | None = None
        self.cold_starts: deque[float] = deque(maxlen=64)  # seconds from scale-up to a connected replica
        self._seq = 0
        self._busy = 0.0  # integral of in-flight over time since the last tick
        self._mark = time.monotonic()
        self._arrived = 0
        self._last_tick = time.monotonic()

    # -- requests ----------------------------------------------------------------
    def _account(self, delta: int) -> None:
        now = time.monotonic()
        self._busy += self.inflight * (now - self._mark)
        self._mark = now
        self.inflight += delta

    async def infer(self, body: bytes, codec: int = dataplane.JSON) -> tuple[int, bytes]:
        """Forward one request to the least-loaded replica, activating one first if there are none.

        A request whose replica died before starting it is sent once more (to another or a fresh replica);
        one that was running when its replica died fails, so a request that kills replicas kills one.
        """
        self._arrived += 1
        self._account(+1)
        try:
            try:
                return await (await self._acquire()).infer(body, codec)
            except NotStarted as exc:
                log.warning("revision %s: %s; sending it to another replica", self.revision.id, exc)
                return await (await self._acquire()).infer(body, codec)
        finally:
            self._account(-1)

    async def _acquire(self) -> ReplicaClient:
        while True:
            if len(self.replicas) == 1:
                return self.replicas[0]
            if self.replicas:
                return min(self.replicas, key=lambda r: r.inflight)
            if self.waiting >= self.queue_limit:
                raise Unavailable(f"revision {self.revision.id}: activation queue is full ({self.queue_limit})")
            if self.starting == 0:
                self.scale_to(1)
            self.waiting += 1
            began = time.monotonic()
            try:
                await asyncio.wait_for(self.ready.wait(), self.activation_timeout_s)
            except TimeoutError:
                raise Unavailable(
                    f"revision {self.revision.id}: no replica became ready in {self.activation_timeout_s}s"
                ) from None
            finally:
                self.waiting -= 1
                self.metrics.queued(self.revision.id, time.monotonic() - began)
            if not self.replicas and self.failure is not None:
                raise Unavailable(f"revision {self.revision.id} cannot start: {self.failure.message}")

    # -- scaling -------------------------------------------------------------------
    def tick(self, now: float) -> tuple[float, int]:
        """Time-averaged concurrency and arrivals since the last tick (then reset)."""
        elapsed = now - self._last_tick
        self._account(0)
        concurrency = self._busy / max(elapsed, 1e-9)
        arrived, self._busy, self._arrived, self._last_tick = self._arrived, 0.0, 0, now
        return concurrency, arrived

    def scale_to(self, desired: int) -> None:
        """Start or retire replicas until ``desired`` are running or starting."""
        current = len(self.replicas) + self.starting
        for _ in range(desired - current):
            self.starting += 1
            asyncio.get_running_loop().create_task(self._start())
        for _ in range(current - desired):
            if not self.replicas:
                break
            victim = min(self.replicas, key=lambda r: r.inflight)
            self.replicas.remove(victim)
            asyncio.get_running_loop().create_task(self._retire(victim))
        if not self.replicas:
            self.ready.clear()

    async def _start(self) -> None:
        began = time.monotonic()
        try:
            card, path = await self.fetch(self.revision)
            self._seq += 1
            spec = ReplicaSpec(
                socket=str(self.socket_dir / f"{self.revision.id.replace('/', '.')}-{self._seq}.sock"),
                model_path=str(path),
                model=card.name,
                version=str(card.version),
                inputs=card.inputs,
                outputs=card.outputs,
                intra_op_threads=self.revision.intra_op_threads,
                max_batch=self.revision.batching.max_batch,
                max_delay_ms=self.revision.batching.max_delay_ms,
            )
            client = ReplicaClient(await self.forks.spawn(asdict(spec)), spec, on_lost=self._lost)
            await client.connect(REPLICA_START_TIMEOUT_S)
        except KnflowError as exc:
            log.error("revision %s: replica failed to start: %s", self.revision.id, exc)
            self.failure = exc
            self.ready.set()  # wake waiters so they fail fast with the reason
            return
        finally:
            self.starting -= 1
        self.failure = None
        self.replicas.append(client)
        self.cold_starts.append(time.monotonic() - began)
        self.metrics.cold_start(self.revision.id)
        log.info(
            "revision %s: replica pid %d ready in %.1f ms", self.revision.id, client.pid, self.cold_starts[-1] * 1e3
        )
        self.ready.set()

    def _lost(self, replica: ReplicaClient) -> None:
        """A replica exited on its own (crash, OOM kill): forget it; the next request or tick starts another."""
        if replica in self.replicas:
            self.replicas.remove(replica)
            log.warning("revision %s: replica pid %d exited unexpectedly", self.revision.id, replica.pid)
        if not self.replicas:
            self.ready.clear()

    async def _retire(self, replica: ReplicaClient) -> None:
        deadline = time.monotonic() + 30
        while replica.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await replica.stop()
        log.info("revision %s: replica pid %d stopped", self.revision.id, replica.pid)

    async def close(self) -> None:
        for replica in self.replicas:
            await replica.stop()
        self.replicas.clear()
