"""Gateway side of replicas: the fork server that starts them and a pipelined connection to each one."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import time
from collections.abc import Callable

from infra.errors import Unavailable
from infra.forkserver import ForkServer
from serving import dataplane, framing
from serving.replica import ReplicaSpec
from serving.zygote import ENTRY

log = logging.getLogger(__name__)
CONNECT_POLL_S = 0.002


def replica_server() -> ForkServer:
    """The gateway's fork server for model replicas, with one thread per replica for the math libraries."""
    threads = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return ForkServer(ENTRY, env=threads)


class NotStarted(Unavailable):
    """The replica went away before it began running the request: it may be sent to another replica."""


class ReplicaClient:
    """One replica process and one pipelined framed connection to it."""

    def __init__(self, pid: int, spec: ReplicaSpec, on_lost: Callable[[ReplicaClient], None] | None = None):
        self.pid = pid
        self.spec = spec
        self.on_lost = on_lost
        self.stopping = False
        self.inflight = 0
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self._started: set[int] = set()  # pending requests the replica said it began running
        self._conn: framing.ResponseReader | None = None
        self._outbox: list[bytes] = []  # frames queued this loop iteration, sent with one syscall

    async def connect(self, timeout: float) -> None:
        """Wait until the replica accepts (its socket appears once the model is loaded)."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        while True:
            try:
                _, self._conn = await loop.create_unix_connection(
                    lambda: framing.ResponseReader(self._answered, self._gone), self.spec.socket
                )
                return
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline or not self.alive():
                    raise Unavailable(f"replica {self.pid} for {self.spec.model} did not start in {timeout}s") from None
                await asyncio.sleep(CONNECT_POLL_S)

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def _answered(self, rid: int, status: int, body: bytes) -> None:
        if status == framing.STARTED:
            if rid in self._pending:
                self._started.add(rid)
            return
        self._started.discard(rid)
        future = self._pending.pop(rid, None)
        if future is not None and not future.done():
            future.set_result((status, body))

    def _gone(self) -> None:
        """The connection closed: fail what waits on it, and tell the pool unless we closed it.

        A request the replica had begun fails (503); one it had not yet begun fails with ``NotStarted``,
        which the pool sends once more to another replica.
        """
        for rid, future in self._pending.items():
            if future.done():
                continue
            if rid in self._started:
                future.set_exception(Unavailable(f"replica {self.pid} went away while running the request"))
            else:
                future.set_exception(NotStarted(f"replica {self.pid} went away before running the request"))
        self._pending.clear()
        self._started.clear()
        if not self.stopping and self.on_lost is not None:
            self.on_lost(self)

    async def infer(self, body: bytes, codec: int = dataplane.JSON) -> tuple[int, bytes]:
        """Send one request body in ``codec``; the replica's status and response body."""
        if self._conn is None or self._conn.is_closing():
            raise Unavailable(f"replica {self.pid} is not connected")
        rid = next(self._ids) & 0xFFFFFFFF
        future: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        self.inflight += 1
        try:
            if not self._outbox:
                asyncio.get_running_loop().call_soon(self._flush)
            self._outbox.append(framing.request_frame(rid, codec, body))
            return await future
        finally:
            self.inflight -= 1
            self._pending.pop(rid, None)
            self._started.discard(rid)

    def _flush(self) -> None:
        frames, self._outbox = self._outbox, []
        if self._conn is not None:
            self._conn.write(b"".join(frames) if len(frames) > 1 else frames[0])

    async def stop(self) -> None:
        """Close the connection (failing what is still pending) and kill the process."""
        self.stopping = True
        if self._conn is not None and self._conn.transport is not None:
            self._conn.transport.close()
        self._gone()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.spec.socket)
