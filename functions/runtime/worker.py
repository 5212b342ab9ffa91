"""One function's worker process, as a pod: started on demand, restarted on a crash, stopped when idle.

Each worker serves its function with ``FunctionHost`` on a Unix socket. It is forked from the runner's warm
fork server (``zygote.template``), or, for a function with an environment of its own, started under that
environment's interpreter (``interpreter.Interpreter``); both report ``ready``, ``failed`` and ``exit`` notices
the same way. The parent (``Worker``) forwards HTTP to it, restarts it after a crash (counted), and stops it
after ``settings.functions.idle_grace_s`` without events (scale to zero).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from functions.runtime.instances import Instance
from functions.runtime.zygote import Spawn
from infra.asyncclient import AsyncClient
from infra.errors import KnflowError, Unavailable
from infra.settings import Settings

log = logging.getLogger(__name__)

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "date", "server", "upgrade"}


class WorkerFailed(Unavailable):
    """A worker could not start (bad module, crash during start, start timeout)."""


class WorkerGone(Unavailable):
    """The worker went away (scaled down) before taking the event; the runner may send it again."""


class Launcher(Protocol):
    """Starts worker processes; their notices (keyed by the ``name`` given here) reach the runner separately."""

    async def spawn(self, spec: Mapping[str, Any]) -> int: ...  # a ``Spawn.spec()``


class Worker:
    """Parent side of one function's worker: state, start/stop, forwarding, crash and idle detection.

    ``key`` is unique per ``Worker`` object (a replaced instance's old and new workers share a name): it names
    the worker's socket and the notices about its processes."""

    def __init__(
        self,
        name: str,
        instance: Instance,
        settings: Settings,
        launcher: Launcher,
        socket_dir: Path,
        sink: str | None = None,
        *,
        key: str | None = None,
    ):
        self.name = name
        self.key = key or name
        self.instance = instance
        self.target = instance.target
        self.env = dict(instance.env)
        self.settings = settings
        self.launcher = launcher
        self.sink = sink
        self.socket_path = str(socket_dir / f"{self.key}.sock")
        self.state = "stopped"
        self.pid: int | None = None
        self.started: float | None = None
        self.last_event: float | None = None
        self.restarts = 0
        self.on_start: Callable[[str], None] = lambda name: None  # told the name at each process start (metrics)
        self.error: str | None = None
        self.inflight = 0
        self._last_active = time.monotonic()
        self._client: AsyncClient | None = None  # to the worker's socket, while it runs
        self._ready: asyncio.Future | None = None
        self._exited: asyncio.Future | None = None
        self._lock = asyncio.Lock()
        self._watch: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._gone: set[int] = set()  # pids already killed or reaped: their late notices are ignored

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "pid": self.pid,
            "started": self.started,
            "last_event": self.last_event,
            "restarts": self.restarts,
            "inflight": self.inflight,
            "error": self.error,
            "module": self.target,
            "python": self.instance.python,
            "function": self.instance.function,
            "env_digest": self.instance.digest(),
        }

    # -- start / stop ---------------------------------------------------------------

    async def ensure_running(self) -> None:
        """Return once the worker serves; starts it if needed (callers bound the wait)."""
        if self.state == "running":
            return
        async with self._lock:
            if self.state != "running":
                await self._start()

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self.state = "starting"
        self._ready, self._exited = loop.create_future(), loop.create_future()
        try:
            self.pid = await self.launcher.spawn(
                Spawn(self.key, self.target, self.socket_path, self.sink, self.env, hosted_as=self.name).spec()
            )
            await asyncio.wait([self._ready, self._exited], return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            self._kill()
            self.state, self.pid = "failed", None
            raise
        if not self._ready.done() or self._ready.result() is not None:
            error = self._ready.result() if self._ready.done() else f"exited with code {self._exited.result()}"
            self.state, self.error, self.pid = "failed", error, None
            raise WorkerFailed(f"function {self.name} failed to start: {error}")
        self.state, self.error = "running", None
        self.on_start(self.name)
        self.started = time.time()
        self._last_active = time.monotonic()
        self._client = AsyncClient(f"http://{self.name}", timeout=None, unix_socket=self.socket_path)
        self._watch = asyncio.create_task(self._idle_watch())
        log.info("function %s started (pid %s)", self.name, self.pid)

    def on_notice(self, notice: dict[str, Any]) -> None:
        """A launcher's notice about this worker's pid: ready, failed or exit."""
        kind, pid = notice["kind"], notice.get("pid")
        if pid in self._gone or (self.pid is not None and pid != self.pid):
            if kind == "exit":
                self._gone.discard(pid)
            return
        if kind == "ready" and self._ready is not None and not self._ready.done():
            self._ready.set_result(None)
        elif kind == "failed" and self._ready is not None and not self._ready.done():
            self._ready.set_result(notice.get("error") or "failed")
        elif kind == "exit":
            self._on_exit(notice.get("code"))

    def _on_exit(self, code: int | None) -> None:
        if self._exited is not None and not self._exited.done():
            self._exited.set_result(code)
        if self.state in ("starting", "stopping"):
            return
        self.pid = None
        self._close_session()
        if self.state == "running":
            self.restarts += 1
            self.state, self.error = "crashed", f"worker exited with code {code}"
            log.warning("function %s crashed (exit code %s); restarting", self.name, code)
            self._background(self._restart())

    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _restart(self) -> None:
        with contextlib.suppress(KnflowError):
            await self.ensure_running()

    def _kill(self, sig: int = signal.SIGKILL) -> None:
        if self.pid is not None:
            if sig == signal.SIGKILL:
                self._gone.add(self.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    async def stop(self, reason: str = "stop", timeout: float = 30.0) -> None:
        """SIGTERM the worker (it drains in-flight events), SIGKILL after ``timeout``."""
        async with self._lock:
            if self.pid is None or self._exited is None or self.state != "running":
                self.state = "stopped" if self.state != "failed" else self.state
                return
            self.state = "stopping"
            log.info("function %s stopping (%s)", self.name, reason)
            self._kill(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self._exited), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)  # its exit notice still resolves _exited
                await self._exited
            self.pid = None
            self._close_session()
            self.state = "stopped"

    def _close_session(self) -> None:
        if self._client is not None:
            self._background(self._client.close())
            self._client = None
        if self._watch is not None and self._watch is not asyncio.current_task():
            self._watch.cancel()
        self._watch = None

    async def _idle_watch(self) -> None:
        grace = self.settings.functions.idle_grace_s
        while self.state == "running":
            wait = self._last_active + grace - time.monotonic()
            if wait <= 0 and self.inflight == 0:
                self._watch = None
                await self.stop("idle")
                return
            await asyncio.sleep(wait if wait > 0 else grace)

    # -- forwarding -----------------------------------------------------------------

    async def forward(self, method: str, path: str, headers: Mapping[str, str], body: bytes):
        """Send one request to the worker; returns ``(status, headers, body)``; 502 if the worker drops it.

        No time limit here: a training step may run for long; delivery's own timeout bounds the wait."""
        client = self._client
        if client is None:
            raise WorkerGone(f"function {self.name} is not running")
        self.inflight += 1
        self.last_event = time.time()
        try:
            answer = await client.send(method, path, body, headers=dict(headers))
        except Unavailable as exc:
            if self.state in ("stopping", "stopped"):
                raise WorkerGone(f"function {self.name} was scaling down") from None
            dropped = f"function {self.name} dropped the event: {exc.__cause__ or exc}"
            raise KnflowError(dropped, status=502, retryable=True) from None
        finally:
            self.inflight -= 1
            self._last_active = time.monotonic()
        if answer.status == 503 and self.state != "running":
            raise WorkerGone(f"function {self.name} was scaling down")
        out = {k: v for k, v in answer.raw_headers if k.lower() not in _HOP_BY_HOP}
        return answer.status, out, answer.data


def request_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The request headers worth forwarding to a worker (no hop-by-hop ones)."""
    return {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
