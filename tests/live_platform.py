"""The real platform for tests that drive it from outside: started on free loopback ports in a temporary data
directory, and the ``knflow`` command line run against it as a user would run it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from infra.localservices import free_platform_ports
from infra.settings import load_settings
from knflow.platform import Platform, settings_env
from tests.eventually import eventually_sync

ROOT = Path(__file__).parents[1]


@contextmanager
def running_platform(data: Path, **settings: str) -> Iterator[tuple[Platform, dict[str, str]]]:
    """The platform on free ports with its data in ``data``, and the environment that points the CLI at it."""
    config = data / "knflow.toml"
    config.write_text("")
    env = {
        "KNFLOW_DATA_DIR": str(data / "knflow"),
        "KNFLOW_LOG_FORMAT": "text",
        **free_platform_ports(),
        **{f"KNFLOW_{k.upper()}": v for k, v in settings.items()},
    }
    loaded = load_settings(env, config_file=config)
    with Platform.start(loaded) as platform:
        cli_env = {**os.environ, **settings_env(loaded), **env, "KNFLOW_CONFIG": str(config)}
        cli_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{cli_env.get('PATH', '')}"  # `knflow` itself
        yield platform, cli_env


def admin_token(env: dict[str, str]) -> str:
    """The platform's local admin token (the one ``knflow up`` writes for its user into the data directory)."""
    return (Path(env["KNFLOW_DATA_DIR"]) / "admin.token").read_text().strip()


def admin_headers(env: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_token(env)}"}


def knflow(
    env: dict[str, str], *args: str, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run ``knflow ARGS`` as a user would (its own process, the platform's settings in its environment)."""
    return subprocess.run(
        [sys.executable, "-m", "knflow", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout
    )


@contextmanager
def knflow_up(env: dict[str, str], cwd: Path, timeout: float = 120) -> Iterator[subprocess.Popen]:
    """``knflow up`` run as a user runs it, in ``cwd``, its output in ``cwd/up.out``; yielded once it says the platform
    is up, stopped (SIGTERM, then SIGKILL) afterwards unless it has exited by itself."""
    out = cwd / "up.out"
    with out.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "knflow", "up"], env={**env, "PYTHONPATH": str(ROOT)}, cwd=cwd, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            started = lambda: process.poll() is not None or "Ctrl-C stops" in out.read_text()  # noqa: E731
            eventually_sync(started, timeout, "knflow up to start the platform")
            assert process.poll() is None, out.read_text()
            yield process
        finally:
            stop(process)


def stop(process: subprocess.Popen, timeout: float = 60) -> None:
    """SIGTERM a process started in its own session (SIGKILL to its group after ``timeout``), and wait for it."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
