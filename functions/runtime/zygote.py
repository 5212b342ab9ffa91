"""What the function runner's workers run: a function host, forked from knflow's one fork server.

The runner keeps an ``infra.forkserver.ForkServer`` on ``ENTRY``: that process has imported the host stack once
(``PRELOAD``), so a cold start is a ``fork`` plus the function's own imports instead of a fresh interpreter
importing aiohttp and the CloudEvents SDK (most of a cold start). Its context is the runner's ``Settings``; each
spawn is a ``Spawn`` (``{"name", "as", "target", "socket", "sink", "env"}``). A worker reports ``ready`` or
``failed`` on the server's notice channel and goes (SIGTERM, so it drains) when the server goes.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from infra.forkserver import ForkServer, die_with_parent, notify
from infra.settings import Settings

ENTRY = "functions.runtime.zygote:worker_main"
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

    def spec(self) -> dict[str, Any]:
        """The request as the fork server (and a worker under its own interpreter) reads it."""
        spec = {"name": self.name, "as": self.hosted_as, "target": self.target, "socket": self.socket}
        return {**spec, "sink": self.sink, "env": self.env}


def template(settings: Settings, on_notice: Callable[[dict[str, Any]], None]) -> ForkServer:
    """The runner's fork server for workers of functions that run under knflow's own interpreter."""
    return ForkServer(ENTRY, settings, on_notice)


def worker_main(spec: dict[str, Any], settings: Settings, ctl: int) -> None:
    """In the forked child: import the function, serve it on its Unix socket, report readiness."""
    from functions.runtime.host import FunctionHost, serve
    from functions.runtime.loader import load_function
    from infra.aio import run
    from infra.logs import configure_logging
    from infra.tracing import traced

    die_with_parent(signal.SIGTERM)  # drain, then go, when the fork server goes
    name, pid = spec["name"], os.getpid()
    configure_logging(settings.log_level, settings.log_format, function=spec.get("as") or name)
    os.environ.update(spec.get("env") or {})  # the instance's own environment (a pipeline step's settings)
    try:
        function = load_function(spec["target"], hosted_as=spec.get("as"))
        host = FunctionHost(function, settings, sink=spec.get("sink"))
    except Exception as exc:
        notify(ctl, kind="failed", name=name, pid=pid, error=f"{type(exc).__name__}: {exc}")
        raise SystemExit(1) from None
    with contextlib.suppress(FileNotFoundError):
        os.unlink(spec["socket"])

    def on_ready(_bound: list[str]) -> None:
        notify(ctl, kind="ready", name=name, pid=pid)
        os.close(ctl)

    with traced(f"function-{name}"):  # after the fork: each worker exports its own spans, flushed as it exits
        run(serve(host, [f"unix:{spec['socket']}"], on_ready=on_ready))
