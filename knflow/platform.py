"""The embedded platform: broker, function runner, inference gateway and dashboard as child processes.

``Platform.start(settings)`` starts each as its own process (as a pod would be), waits until each
answers its health check, applies the pipelines (the shipped lifecycle, and every one applied before) and
returns once the broker reports every trigger ready (its consumer group joined and positioned). The children
read the same settings from the environment this module hands them, so one ``Settings`` object describes the
whole platform. ``supervise()`` restarts components that exit (``knflow.supervisor``; ``knflow up`` uses it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from infra.auth import auth_headers, ensure_local_admin
from infra.errors import Unavailable
from infra.httpclient import JsonClient
from infra.localservices import spawn
from infra.settings import SECTIONS, Settings, authority
from knflow.control import PipelineControl
from knflow.follow import History
from knflow.supervisor import Supervisor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Component:
    """One process of the platform: its module, the port setting it listens on and its health path."""

    name: str
    module: str
    port_setting: str
    health: str


COMPONENTS = (
    Component("broker", "knflow.broker", "broker_port", "/health"),
    Component("functions", "functions.runtime.runner", "functions_port", "/functions"),
    Component("gateway", "serving.gateway", "gateway_port", "/v2/health/live"),
    Component("dashboard", "knflow.dashboard", "dashboard_port", "/api/health"),
)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process load exactly these settings (the sections' where they differ
    from the defaults)."""
    return {**_top_level_env(settings), **_section_env(settings)}


def _section_env(settings: Settings) -> dict[str, str]:
    env = {}
    for section, kind in SECTIONS.items():
        values, defaults = getattr(settings, section), kind()
        for f in dataclasses.fields(values):
            value = getattr(values, f.name)
            if value != getattr(defaults, f.name):
                text = str(value).lower() if isinstance(value, bool) else str(value)
                env[f"KNFLOW_{section.upper()}_{f.name.upper()}"] = text
    return env


def _top_level_env(settings: Settings) -> dict[str, str]:
    return {
        "KNFLOW_DATA_DIR": str(settings.data_dir),
        "KNFLOW_BROKER": settings.broker.url,
        "KNFLOW_ARTIFACTS": settings.artifacts.url,
        "KNFLOW_HOST": settings.host,
        "KNFLOW_BROKER_PORT": str(settings.broker_port),
        "KNFLOW_FUNCTIONS_PORT": str(settings.functions_port),
        "KNFLOW_GATEWAY_PORT": str(settings.gateway_port),
        "KNFLOW_DASHBOARD_PORT": str(settings.dashboard_port),
        "KNFLOW_GRPC_PORT": str(settings.grpc_port),
        "KNFLOW_LOG_LEVEL": settings.log_level,
        "KNFLOW_LOG_FORMAT": settings.log_format,
    }


@dataclass
class Platform:
    """The running platform's processes and where to reach them."""

    settings: Settings
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    log_dir: Path | None = None
    supervisor: Supervisor | None = None
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)  # guards ``processes``
    _env: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def headers(self) -> dict[str, str]:
        """``Authorization`` for calls to this platform's servers (the machine user's admin token)."""
        return auth_headers(self.settings)

    def api(self, component: str) -> JsonClient:
        """A JSON client of one of this platform's servers, with this platform's credentials."""
        return JsonClient(self.url(component), headers=self.headers)

    def history(self) -> History:
        """The broker's event history, read with this platform's credentials."""
        return History(self.url("broker"), self.headers)

    def url(self, component: str) -> str:
        port = getattr(self.settings, next(c.port_setting for c in COMPONENTS if c.name == component))
        return self.settings.url(port)

    @classmethod
    def start(
        cls,
        settings: Settings,
        *,
        extra_env: dict[str, str] | None = None,
        timeout: float = 60.0,
        only: Collection[str] | None = None,
    ) -> Platform:
        """Start every component (or ``only`` those named: the others run elsewhere on their ports), wait for
        health, apply the pipelines and wait until the broker reports every trigger ready."""
        log_dir = settings.data_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        platform = cls(settings, log_dir=log_dir)
        ensure_local_admin(settings)  # the children call each other with it; the CLI and the page sign in with it
        platform._env = {**os.environ, **settings_env(settings), **(extra_env or {})}
        components = [c for c in COMPONENTS if only is None or c.name in only]
        try:
            for component in components:
                _check_port_free(settings, component)
                platform.spawn(component)
            for component in components:
                platform._wait_healthy(component, timeout)
            platform.install_pipelines(timeout)
        except BaseException:
            platform.stop()
            raise
        return platform

    def spawn(self, component: Component) -> None:
        """Start one component's process (its output appended to its log)."""
        assert self.log_dir is not None, "a platform that spawns components has a log directory"
        log_path = self.log_dir / f"{component.name}.log"
        self.processes[component.name] = spawn([sys.executable, "-m", component.module], log_path, self._env)

    def supervise(self, on_failure: Callable[[str], None] | None = None) -> Supervisor:
        """Restart components that exit from now on (``settings.platform``); ``on_failure(why)`` when one keeps
        failing."""
        self.supervisor = Supervisor(self, on_failure=on_failure).start()
        return self.supervisor

    def restart(self, name: str, *, kill: bool = False, timeout: float = 60.0) -> None:
        """Stop one component (SIGTERM, or SIGKILL with ``kill``, as a crash would) and start it again."""
        component = next(c for c in COMPONENTS if c.name == name)
        with self.lock:  # a supervisor sees the new process, never the gap (so this is no crash to it)
            process = self.processes.pop(name)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
            process.wait(timeout)
            self.spawn(component)
        self._wait_healthy(component, timeout)

    def _wait_healthy(self, component: Component, timeout: float) -> None:
        server, url = JsonClient(self.url(component.name)), self.url(component.name) + component.health
        deadline = time.monotonic() + timeout
        process = self.processes[component.name]
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise Unavailable(
                    f"{component.name} exited with code {process.returncode} at start; "
                    f"see {self.log_dir}/{component.name}.log"
                )
            if server.alive(component.health):
                return
            time.sleep(0.05)
        raise Unavailable(
            f"{component.name} did not answer {url} within {timeout:.0f}s; see {self.log_dir}/{component.name}.log"
        )

    def install_pipelines(self, timeout: float = 60.0) -> None:
        """Apply every stored pipeline, and the shipped lifecycle unless one of that name is stored (idempotent),
        then wait until the broker says every trigger is ready.

        The broker records where a new trigger starts before it answers, so an event accepted after the PUTs
        reaches its trigger however long the consumer group takes to join (seconds on Kafka); ``start``
        returns only once they have joined, so the platform is not "up" with a trigger still joining.
        """
        PipelineControl(self.settings).ensure_defaults()
        self._wait_ready(JsonClient(self.url("broker"), name="broker"), timeout)

    def _wait_ready(self, broker: JsonClient, timeout: float) -> None:
        deadline, answer = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            with contextlib.suppress(Unavailable):
                answer = broker.send("GET", "/health", timeout=2.0)
                if answer.status == 200:
                    return
            time.sleep(0.1)
        detail = answer.data[:300] if answer is not None else b"no answer"
        raise Unavailable(f"the broker's triggers were not ready within {timeout:.0f}s: {detail!r}")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM every component (they finish in-flight work), SIGKILL what outlives ``timeout``."""
        self._unsupervise()
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()

    def kill(self) -> None:
        """SIGKILL every component and everything it started, as a machine failure would."""
        self._unsupervise()
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        for process in self.processes.values():
            process.wait()
        self.processes.clear()

    def _unsupervise(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
            self.supervisor = None

    def __enter__(self) -> Platform:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _check_port_free(settings: Settings, component: Component) -> None:
    import socket

    port = getattr(settings, component.port_setting)
    try:  # of the address's own family: an IPv4 socket cannot even try ::1
        socket.create_connection((settings.client_host, port), timeout=5.0).close()
    except OSError:
        return  # nothing answers there
    raise Unavailable(
        f"port {authority(settings.host, port)} for the {component.name} is in use; stop what holds it or set "
        f"KNFLOW_{component.port_setting.upper()}"
    )
