"""Workers under a function's own interpreter: ``PYTHON -m functions.runtime.host --worker`` on a Unix socket.

A function deployed with dependencies of its own runs in a virtual environment, so it cannot be forked from
the runner's warm template (that process has knflow's interpreter and modules). ``Interpreter`` starts its
workers as processes of that environment's Python instead, speaking the template's protocol: the parent
writes the pickled ``Settings`` (base64) and the spawn spec as two JSON lines on the child's stdin; the child
reports ``ready`` or ``failed`` on its stdout (what the function prints goes to stderr), and the parent adds
the ``exit`` notice with the exit code when the process ends. Readiness, idle stop, crash restart and status
are then the ``Worker``'s, as for forked workers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import pickle
import sys
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from infra.errors import Unavailable
from infra.settings import Settings

HOST_MODULE = "functions.runtime.host"


class Interpreter:
    """Parent side: starts workers under ``python`` and turns their output and exit into notices."""

    def __init__(self, python: str, settings: Settings, on_notice: Callable[[dict[str, Any]], None]):
        self.python = python
        self.settings = settings
        self.on_notice = on_notice
        self._readers: set[asyncio.Task] = set()

    async def spawn(self, spec: Mapping[str, Any]) -> int:
        """Start a worker; returns its pid (readiness comes later as a notice)."""
        try:
            process = await asyncio.create_subprocess_exec(
                self.python,
                "-m",
                HOST_MODULE,
                "--worker",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise Unavailable(f"cannot start {self.python}: {exc}") from None
        assert process.stdin is not None
        process.stdin.write(base64.b64encode(pickle.dumps(self.settings)) + b"\n" + orjson.dumps(spec) + b"\n")
        with contextlib.suppress(ConnectionError):  # a child that died at once is reported by its exit notice
            await process.stdin.drain()
        process.stdin.close()
        reader = asyncio.create_task(self._read(spec["name"], process))
        self._readers.add(reader)
        reader.add_done_callback(self._readers.discard)
        return process.pid

    async def _read(self, name: str, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            try:
                notice = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # the notice channel carries only the host's own lines
            self.on_notice({**notice, "name": name, "pid": process.pid})
        code = await process.wait()
        self.on_notice({"kind": "exit", "name": name, "pid": process.pid, "code": code})


def serve_worker() -> int:
    """In the child: read the settings and spawn spec from stdin, then serve as a forked worker does."""
    from functions.runtime.zygote import worker_main

    ctl = os.dup(1)
    os.dup2(2, 1)  # anything the function prints goes to stderr, never into the notice channel
    settings = pickle.loads(base64.b64decode(sys.stdin.buffer.readline()))
    spec = orjson.loads(sys.stdin.buffer.readline())
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    try:
        worker_main(spec, settings, ctl)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0
