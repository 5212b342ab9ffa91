"""The worker template ("zygote"): a process that has imported the host stack once and forks function workers.

A cold start is then a ``fork`` plus the function's own imports, instead of a fresh interpreter
importing aiohttp and the CloudEvents SDK (the saving is most of a cold start). Protocol, JSON lines:
the parent writes the pickled ``Settings`` (base64) once, then ``Spawn.line()`` (``{"spawn": name, "as",
"target", "socket", "sink", "env"}``) per worker on the template's stdin; the template and its workers write
``spawned``, ``ready``, ``failed`` and ``exit`` notices (with pid, and exit code) on the template's stdout.
Workers die with the template (PR_SET_PDEATHSIG), and the template exits when its stdin closes.
"""

from __future__ import annotations

import asyncio
import base64
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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from infra.errors import Unavailable
from infra.settings import Settings

log = logging.getLogger(__name__)

PRELOAD = ("functions.runtime.host", "functions.examples.echo", "infra.store_file")
OPTIONAL_PRELOAD = ("uvloop",)


@dataclass(frozen=True)
class Spawn:
    """One worker to start: function ``name`` (``hosted_as`` the instance it serves) loading ``target``, listening on
    the Unix ``socket``, sending extra events to ``sink``, with ``env`` added to its environment."""

    name: str
    target: str
    socket: str
    sink: str | None
    env: dict[str, str] = field(default_factory=dict)
    hosted_as: str | None = None

    def line(self) -> bytes:
        """The request as the template (and a worker under its own interpreter) reads it: one JSON line."""
        spec = {"spawn": self.name, "as": self.hosted_as, "target": self.target, "socket": self.socket}
        return orjson.dumps({**spec, "sink": self.sink, "env": self.env}) + b"\n"


def _notify(fd: int, **message: Any) -> None:
    os.write(fd, orjson.dumps(message) + b"\n")  # one small write: atomic on a pipe


def worker_main(spec: dict[str, Any], settings: Settings, ctl: int) -> None:
    """In the forked child: import the function, serve it on its Unix socket, report readiness."""
    from functions.runtime.host import FunctionHost, serve
    from functions.runtime.loader import load_function
    from infra.aio import run
    from infra.logs import configure_logging
    from infra.tracing import traced

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: go when the template goes
    name, pid = spec["spawn"], os.getpid()
    configure_logging(settings.log_level, settings.log_format, function=spec.get("as") or name)
    os.environ.update(spec.get("env") or {})  # the instance's own environment (a pipeline step's settings)
    try:
        function = load_function(spec["target"], hosted_as=spec.get("as"))
        host = FunctionHost(function, settings, sink=spec.get("sink"))
    except Exception as exc:
        _notify(ctl, kind="failed", name=name, pid=pid, error=f"{type(exc).__name__}: {exc}")
        raise SystemExit(1) from None
    with contextlib.suppress(FileNotFoundError):
        os.unlink(spec["socket"])

    def on_ready(_bound: list[str]) -> None:
        _notify(ctl, kind="ready", name=name, pid=pid)
        os.close(ctl)

    with traced(f"function-{name}"):  # after the fork: each worker exports its own spans, flushed as it exits
        run(serve(host, [f"unix:{spec['socket']}"], on_ready=on_ready))


def _fork_worker(spec: dict[str, Any], settings: Settings, ctl: int, wake: tuple[int, int]) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in wake:
            os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        worker_main(spec, settings, ctl)
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
        _notify(ctl, kind="exit", pid=pid, code=os.waitstatus_to_exitcode(status))


def template_main() -> None:
    """``python -m functions.runtime.zygote``: preload, then fork a worker per spawn command until stdin closes."""
    ctl = os.dup(1)
    os.dup2(2, 1)  # anything printed goes to stderr, never into the notice channel
    for module in PRELOAD:
        importlib.import_module(module)
    from functions.runtime.host import DEFERRED  # what a fresh host leaves for later: forks share it from here

    for module in DEFERRED:
        importlib.import_module(module)
    for module in OPTIONAL_PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    wake = os.pipe()
    os.set_blocking(wake[1], False)
    signal.set_wakeup_fd(wake[1])
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    buffer, settings = b"", None
    _notify(ctl, kind="template", pid=os.getpid())
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
            if settings is None:
                settings = pickle.loads(base64.b64decode(line))
                continue
            spec = orjson.loads(line)
            pid = _fork_worker(spec, settings, ctl, wake)
            _notify(ctl, kind="spawned", name=spec["spawn"], pid=pid)


class Template:
    """Parent side: starts the template process, asks it for workers, routes its notices by pid."""

    def __init__(self, settings: Settings, on_notice: Callable[[dict[str, Any]], None]):
        self.settings = settings
        self.on_notice = on_notice
        self.process: asyncio.subprocess.Process | None = None
        self._spawned: dict[str, asyncio.Future] = {}
        self._reader: asyncio.Task | None = None
        self._names: dict[int, str] = {}
        self._lock = asyncio.Lock()

    async def ensure_running(self) -> None:
        async with self._lock:
            if self.process is not None and self.process.returncode is None:
                return
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "functions.runtime.zygote",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            assert self.process.stdin is not None and self.process.stdout is not None
            self.process.stdin.write(base64.b64encode(pickle.dumps(self.settings)) + b"\n")
            first = await self.process.stdout.readline()
            if not first:
                raise Unavailable("the worker template exited while starting")
            self._reader = asyncio.create_task(self._read(self.process))

    async def spawn(self, spec: Spawn) -> int:
        """Fork a worker; returns its pid once forked (readiness comes later as a notice)."""
        await self.ensure_running()
        assert self.process is not None and self.process.stdin is not None
        waiter = asyncio.get_running_loop().create_future()
        self._spawned[spec.name] = waiter
        self.process.stdin.write(spec.line())
        await self.process.stdin.drain()
        return await waiter

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            notice = orjson.loads(line)
            if notice["kind"] == "spawned":
                self._names[notice["pid"]] = notice["name"]
                waiter = self._spawned.pop(notice["name"], None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(notice["pid"])
            elif notice["kind"] == "exit":
                notice["name"] = self._names.pop(notice["pid"], None)
            self.on_notice(notice)
        await process.wait()
        for waiter in self._spawned.values():
            if not waiter.done():
                waiter.set_exception(Unavailable("the worker template exited"))
        self._spawned.clear()
        for pid, name in self._names.items():
            self.on_notice({"kind": "exit", "pid": pid, "name": name, "code": None})
        self._names.clear()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            await self.process.wait()
        if self._reader is not None:
            await self._reader


if __name__ == "__main__":
    template_main()
