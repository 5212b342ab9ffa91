"""Supervision of the platform's processes: a component that exits is restarted with exponential backoff and its exit
logged with the tail of its log; one that keeps failing gives up, and ``knflow up`` exits non-zero saying which.

A thread looks at the processes every ``TICK_S``. A component is ``running``, ``backoff`` (it exited and waits to be
started again), ``starting`` (started again, not answering its health check yet) or ``failed``. The k-th restart
within ``platform.restart_window_s`` waits ``restart_backoff_s * 2^(k-1)`` (at most ``restart_backoff_max_s``); an exit
after ``restart_limit`` restarts in the window gives up. So does a restarted component that does not answer within
``start_timeout_s``, once it has used its restarts. Every change is written to ``<data_dir>/platform/components.json``,
which the knflow server shows in ``/api/health``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from subprocess import Popen
from typing import TYPE_CHECKING, Any

from infra.atomic import write_json
from infra.httpclient import JsonClient
from infra.settings import Settings

if TYPE_CHECKING:
    from knflow.platform import Component, Platform

log = logging.getLogger(__name__)
TICK_S = 0.2
RUNNING, BACKOFF, STARTING, FAILED = "running", "backoff", "starting", "failed"
TAIL_LINES, TAIL_BYTES = 12, 8192


def state_path(settings: Settings) -> Path:
    """Where the supervisor of the platform on this data directory writes its components' states."""
    return settings.data_dir / "platform" / "components.json"


@dataclass
class Watched:
    """What the supervisor knows of one component."""

    component: Component
    process: Popen | None
    state: str = RUNNING
    restarts: deque[float] = field(default_factory=deque)  # monotonic times of the restarts within the window
    total_restarts: int = 0
    due: float = 0.0  # backoff: when to start again; starting: when to give up waiting for health
    last_exit: str = ""
    since: str = field(default_factory=lambda: _now())

    def view(self, log_dir: Path | None) -> dict[str, Any]:
        name = self.component.name
        pid = self.process.pid if self.process is not None and self.state != BACKOFF else None
        body = {"name": name, "state": self.state, "pid": pid, "restarts": self.total_restarts, "since": self.since}
        return {**body, "last_exit": self.last_exit or None, "log": str(log_dir / f"{name}.log") if log_dir else None}


class Supervisor:
    """Watches ``platform``'s processes in a thread; ``failure`` says why it gave up (``on_failure`` is called)."""

    def __init__(self, platform: Platform, *, on_failure: Callable[[str], None] | None = None):
        from knflow.platform import COMPONENTS

        self.platform, self.policy = platform, platform.settings.platform
        self.path = state_path(platform.settings)
        by_name = {c.name: c for c in COMPONENTS}
        self.watched = {name: Watched(by_name[name], p) for name, p in platform.processes.items()}
        self.failure: str | None = None
        self._on_failure = on_failure
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._servers: dict[str, JsonClient] = {}  # by component, pooled across checks

    def start(self) -> Supervisor:
        self._write()
        self._thread = threading.Thread(target=self._loop, name="knflow-supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (the platform's processes are left as they are) and remove the state file."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)
        self.path.unlink(missing_ok=True)

    def _loop(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                self.check()
            except Exception:  # supervision must outlive its own mistakes; each is logged
                log.exception("supervising the platform failed; trying again")

    def check(self) -> None:
        """Look at every component once: notice exits, start again what waited long enough, notice health."""
        changed = False
        for watched in self.watched.values():
            if self.failure is not None or self._stop.is_set():
                return
            changed = self._check_one(watched, time.monotonic()) or changed
        if changed:
            self._write()

    def _check_one(self, w: Watched, now: float) -> bool:
        with self.platform.lock:
            current = self.platform.processes.get(w.component.name)
            if current is not w.process and current is not None:  # replaced by Platform.restart: not an exit
                w.process, w.state, w.due = current, STARTING, now + self.policy.start_timeout_s
                return True
            code = w.process.poll() if w.process is not None else None
        if w.state in (RUNNING, STARTING) and code is not None:
            return self._exited(w, exit_reason(code), now)
        if w.state == STARTING and now > w.due:
            self._kill_group(w)
            return self._exited(w, f"did not answer its health check within {self.policy.start_timeout_s:.0f}s", now)
        if w.state == STARTING and self._healthy(w):
            assert w.process is not None, "a starting component has its process"
            self._set(w, RUNNING)
            log.info("%s is running again (pid %d, restart %d)", w.component.name, w.process.pid, w.total_restarts)
            return True
        if w.state == BACKOFF and now >= w.due:
            self._respawn(w, now)
            return True
        return False

    def _exited(self, w: Watched, why: str, now: float) -> bool:
        self._kill_group(w)  # what the component started (forked workers) goes with it
        name, window = w.component.name, self.policy.restart_window_s
        while w.restarts and now - w.restarts[0] > window:
            w.restarts.popleft()
        w.last_exit = why
        tail = log_tail(self._log_path(name))
        if len(w.restarts) >= self.policy.restart_limit:
            self._set(w, FAILED)
            self.failure = (
                f"the {name} keeps failing: it {why} after {len(w.restarts)} restart(s) within {window:.0f}s; "
                f"see {self._log_path(name)}"
            )
            log.error("%s; giving up. Last lines of its log:\n%s", self.failure, tail)
            if self._on_failure is not None:
                self._on_failure(self.failure)
            return True
        delay = min(self.policy.restart_backoff_max_s, self.policy.restart_backoff_s * 2 ** len(w.restarts))
        w.restarts.append(now)
        w.total_restarts += 1
        w.due = now + delay
        self._set(w, BACKOFF)
        log.error(
            "the %s %s; starting it again in %.1fs (restart %d within %.0fs, %d allowed). Last lines of %s:\n%s",
            *(name, why, delay, len(w.restarts), window, self.policy.restart_limit, self._log_path(name), tail),
        )
        return True

    def _respawn(self, w: Watched, now: float) -> None:
        with self.platform.lock:
            self.platform.spawn(w.component)
            w.process = self.platform.processes[w.component.name]
        w.due = now + self.policy.start_timeout_s
        self._set(w, STARTING)

    def _healthy(self, w: Watched) -> bool:
        name = w.component.name
        if name not in self._servers:
            self._servers[name] = JsonClient(self.platform.url(name))
        return self._servers[name].alive(w.component.health)

    @staticmethod
    def _kill_group(w: Watched) -> None:
        if w.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(w.process.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            w.process.wait(10)

    @staticmethod
    def _set(w: Watched, state: str) -> None:
        w.state, w.since = state, _now()

    def _log_path(self, name: str) -> Path:
        return (self.platform.log_dir or self.platform.settings.data_dir / "logs") / f"{name}.log"

    def _write(self) -> None:
        components = [w.view(self.platform.log_dir) for w in self.watched.values()]
        write_json(self.path, {"supervisor": os.getpid(), "updated": _now(), "components": components}, indent=1)


def exit_reason(code: int) -> str:
    """An exit status in words: ``exited with code 1``, ``was killed by SIGKILL``."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def log_tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last lines of a log file (at most ``TAIL_BYTES`` read), or why there are none."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - TAIL_BYTES))
            text = fh.read().decode(errors="replace")
    except OSError as exc:
        return f"  (no log: {exc})"
    return "\n".join(f"  {line[:500]}" for line in text.splitlines()[-lines:]) or "  (the log is empty)"


def components_health(settings: Settings) -> list[dict[str, Any]]:
    """The states the supervisor of this data directory's platform wrote, or [] when none is running."""
    import json

    try:
        stored = json.loads(state_path(settings).read_text())
        os.kill(int(stored["supervisor"]), 0)  # a supervisor that is gone left a stale file
        return list(stored["components"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
