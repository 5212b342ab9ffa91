"""One way to run a knflow server process: logging configured once, tracing, uvloop, SIGTERM or SIGINT to a graceful
stop bounded in time, and the process's exit code."""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from infra.aio import run
from infra.logs import configure_logging
from infra.settings import Settings
from infra.tracing import traced

log = logging.getLogger(__name__)

#: SIGINT too: a child started in the background (``cmd &``) inherits SIGINT ignored, and a handler set here is
#: how such a server still stops cleanly on it; SIGTERM is what supervisors and Kubernetes send.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
DRAIN_TIMEOUT_S = 30.0


async def serve_until_signalled(
    start: Callable[[], Awaitable[object]],
    stop: Callable[[], Awaitable[None]],
    *,
    name: str,
    drain_timeout: float | None = DRAIN_TIMEOUT_S,
) -> bool:
    """``start()``, serve until SIGTERM or SIGINT (one during ``start`` is kept), then ``stop()`` within
    ``drain_timeout`` seconds (``None``: the server bounds its own drain); whether it stopped in time."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[int] = loop.create_future()

    def note(sig: int) -> None:
        if not received.done():  # a second signal while stopping changes nothing
            received.set_result(sig)

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, note, sig)
    await start()
    try:
        log.info("%s stopping on %s", name, signal.Signals(await received).name)
    finally:  # also when the wait is cancelled: what was started is stopped
        stopped = await _stop_within(stop, name, drain_timeout)
    return stopped


async def _stop_within(stop: Callable[[], Awaitable[None]], name: str, timeout: float | None) -> bool:
    try:
        await asyncio.wait_for(stop(), timeout)
    except TimeoutError:
        log.error("%s did not stop within %gs; exiting anyway", name, timeout)
        return False
    return True


def run_server(
    serve: Callable[[], Coroutine[Any, Any, bool]],
    settings: Settings,
    *,
    service: str | None,
    environ: Mapping[str, str] | None = None,
    dump_stacks: bool = False,
) -> int:
    """A server process's whole run: logging, tracing as ``service`` (``None``: none), ``serve()`` on uvloop; with
    ``dump_stacks``, ``kill -USR1`` prints every thread's stack. The exit code: 0 when it stopped in time, else 1."""
    configure_logging(settings.log_level, settings.log_format)
    if dump_stacks:
        faulthandler.register(signal.SIGUSR1)
    stopped = True
    with contextlib.suppress(KeyboardInterrupt), traced(service, environ) if service else contextlib.nullcontext():
        stopped = run(serve())
    return 0 if stopped else 1
