"""infra.serve: every knflow server process stops cleanly on SIGTERM and SIGINT, within its drain bound."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.eventually import eventually_sync

ROOT = Path(__file__).parents[2]

#: a tiny server: ``start`` writes "starting", sleeps ``START_S``, writes "started"; ``stop`` sleeps ``STOP_S`` then
#: writes "stopped"
TINY = textwrap.dedent(
    """
    import asyncio, os, sys
    from pathlib import Path
    from infra.serve import run_server, serve_until_signalled
    from infra.settings import load_settings

    marks = Path(sys.argv[1])

    async def start():
        (marks / "starting").write_text("")
        await asyncio.sleep(float(os.environ["START_S"]))
        (marks / "started").write_text("")

    async def stop():
        await asyncio.sleep(float(os.environ["STOP_S"]))
        (marks / "stopped").write_text("")

    async def serve():
        return await serve_until_signalled(start, stop, name="tiny", drain_timeout=float(os.environ["DRAIN_S"]))

    sys.exit(run_server(serve, load_settings(), service="tiny"))
    """
)


def start_tiny(
    tmp_path: Path, *, start_s: float = 0.0, stop_s: float = 0.0, drain_s: float = 5.0, until: str = "started"
) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KNFLOW_DATA_DIR": str(tmp_path), "KNFLOW_LOG_FORMAT": "text",
           "START_S": str(start_s), "STOP_S": str(stop_s), "DRAIN_S": str(drain_s)}  # fmt: skip
    process = subprocess.Popen([sys.executable, "-c", TINY, str(tmp_path)], env=env, stderr=subprocess.PIPE, text=True)
    eventually_sync(lambda: (tmp_path / until).exists(), timeout=30, what=f"the tiny server's {until!r} mark")
    return process


def stop_tiny(process: subprocess.Popen[str], sig: signal.Signals = signal.SIGTERM) -> str:
    """Send ``sig`` and wait for the process to exit; its stderr."""
    try:
        process.send_signal(sig)
        return process.communicate(timeout=15)[1]
    finally:
        process.kill()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_runs_the_servers_stop_and_exits_0(tmp_path: Path, sig: signal.Signals) -> None:
    process = start_tiny(tmp_path)
    stderr = stop_tiny(process, sig)
    assert process.returncode == 0, stderr
    assert (tmp_path / "stopped").exists()
    assert f"tiny stopping on {sig.name}" in stderr


def test_a_stop_slower_than_the_drain_bound_exits_1(tmp_path: Path) -> None:
    process = start_tiny(tmp_path, stop_s=30.0, drain_s=0.3)
    stderr = stop_tiny(process)
    assert process.returncode == 1, stderr
    assert not (tmp_path / "stopped").exists()
    assert "tiny did not stop within 0.3s" in stderr


def test_a_stop_signal_while_starting_stops_the_server_once_it_has_started(tmp_path: Path) -> None:
    process = start_tiny(tmp_path, start_s=1.0, until="starting")
    stderr = stop_tiny(process)
    assert process.returncode == 0, stderr
    assert (tmp_path / "started").exists() and (tmp_path / "stopped").exists()
