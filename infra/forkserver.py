"""knflow's one preloading fork server: a process that imports a stack once, then forks a child per request.

A cold start is then a ``fork`` plus what the child itself imports, instead of a fresh interpreter: the
function runner forks its workers this way and the gateway its model replicas. The parent starts
``python -m infra.forkserver MODULE:ENTRY``; the server imports ``MODULE`` (and the names in its ``PRELOAD`` and,
where installed, ``OPTIONAL_PRELOAD``), reads a pickled context (base64, one line) from stdin, then one JSON
spec per line, forks, and calls ``ENTRY(spec, context, notices_fd)`` in the child. Notices are JSON lines on the
server's stdout: ``server`` once, ``spawned`` (the spec's ``name``, pid) per fork, ``exit`` (pid, code) per child
reaped, and whatever a child writes on ``notices_fd`` (one small write each). Children die with the server
(PR_SET_PDEATHSIG, SIGKILL unless the entry sets another signal), and the server exits when its stdin closes.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import ctypes
import importlib
import logging
import os
import pickle
import select
import signal
import sys
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from infra.errors import Unavailable

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1
Entry = Callable[[dict[str, Any], Any, int], None]


def notify(fd: int, **message: Any) -> None:
    """One notice on the server's channel: one small write, atomic on a pipe."""
    os.write(fd, orjson.dumps(message) + b"\n")


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Have the kernel send ``sig`` to this process when its parent exits."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, sig)


def load_entry(target: str) -> Entry:
    """Import ``MODULE:ENTRY`` and everything the module asks to preload."""
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    for name in getattr(module, "PRELOAD", ()):
        importlib.import_module(name)
    for name in getattr(module, "OPTIONAL_PRELOAD", ()):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    return getattr(module, attr)


def _fork(entry: Entry, spec: dict[str, Any], context: Any, ctl: int, wake: tuple[int, int]) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # SIGINT stays ignored: a terminal's ^C is the parent's
        for fd in wake:
            os.close(fd)
        die_with_parent()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        entry(spec, context, ctl)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stderr.flush()
        os._exit(code)


def _reap(ctl: int) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        notify(ctl, kind="exit", pid=pid, code=os.waitstatus_to_exitcode(status))


def serve(target: str) -> None:
    """The server's loop: preload, then fork a child per spec line until stdin closes."""
    ctl = os.dup(1)
    os.dup2(2, 1)  # anything printed goes to stderr, never into the notice channel
    entry = load_entry(target)
    wake = os.pipe()
    os.set_blocking(wake[1], False)
    signal.set_wakeup_fd(wake[1])
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is the parent's to handle
    buffer, context, has_context = b"", None, False
    notify(ctl, kind="server", pid=os.getpid())
    while True:
        readable, _, _ = select.select([0, wake[0]], [], [])
        if wake[0] in readable:
            os.read(wake[0], 4096)
            _reap(ctl)
        if 0 not in readable:
            continue
        chunk = os.read(0, 65536)
        if not chunk:
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if not has_context:
                context, has_context = pickle.loads(base64.b64decode(line)), True
                continue
            spec = orjson.loads(line)
            pid = _fork(entry, spec, context, ctl, wake)
            notify(ctl, kind="spawned", name=spec.get("name"), pid=pid)


class ForkServer:
    """Parent side: starts the server (again, if it exited), asks it for children, routes its notices."""

    def __init__(
        self,
        target: str,
        context: Any = None,
        on_notice: Callable[[dict[str, Any]], None] | None = None,
        env: Mapping[str, str] | None = None,
    ):
        self.target = target
        self.context = context
        self.on_notice = on_notice or (lambda _notice: None)
        self.env = {**os.environ, **env} if env else None
        self.process: asyncio.subprocess.Process | None = None
        self._spawned: collections.deque[asyncio.Future[int]] = collections.deque()
        self._names: dict[int, str | None] = {}
        self._reader: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def ensure_running(self) -> None:
        async with self._lock:
            if self.running:
                return
            if self.process is not None:
                log.warning("fork server %s exited; starting a new one", self.target)
                assert self.process.stdin is not None
                self.process.stdin.close()  # the dead server's pipe, not left to the collector
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "infra.forkserver", self.target,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=self.env,
            )  # fmt: skip
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write(base64.b64encode(pickle.dumps(self.context)) + b"\n")
            self.process = process
            if not await process.stdout.readline():
                raise Unavailable(f"the fork server {self.target} exited while starting")
            self._reader = asyncio.create_task(self._read(process))

    async def spawn(self, spec: Mapping[str, Any]) -> int:
        """Fork a child for ``spec``; its pid once forked (anything later comes as notices)."""
        await self.ensure_running()
        assert self.process is not None and self.process.stdin is not None
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._spawned.append(waiter)  # the server forks in the order it reads: answers come in this order
        self.process.stdin.write(orjson.dumps(spec) + b"\n")
        await self.process.stdin.drain()
        return await waiter

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            notice = orjson.loads(line)
            if notice["kind"] == "spawned":
                self._names[notice["pid"]] = notice["name"]
                waiter = self._spawned.popleft() if self._spawned else None
                if waiter is not None and not waiter.done():
                    waiter.set_result(notice["pid"])
            elif notice["kind"] == "exit":
                notice["name"] = self._names.pop(notice["pid"], None)
            self.on_notice(notice)
        await process.wait()
        while self._spawned:
            waiter = self._spawned.popleft()
            if not waiter.done():
                waiter.set_exception(Unavailable(f"the fork server {self.target} exited"))
        for pid, name in self._names.items():
            self.on_notice({"kind": "exit", "pid": pid, "name": name, "code": None})
        self._names.clear()

    async def stop(self, timeout: float = 5.0) -> None:
        """Close the server's stdin (it exits, its children with it); kill it after ``timeout`` seconds."""
        process = self.process
        if process is not None:
            assert process.stdin is not None
            process.stdin.close()  # also when the server died first: its pipe is not left to the collector
            if process.returncode is None:
                try:
                    await asyncio.wait_for(process.wait(), timeout)
                except TimeoutError:
                    process.kill()
                    await process.wait()
        if self._reader is not None:
            await self._reader


if __name__ == "__main__":
    serve(sys.argv[1])
