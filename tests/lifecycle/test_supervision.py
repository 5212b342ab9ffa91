"""``knflow up`` watches its children: each component SIGKILLed in turn (broker, functions runner, gateway, knflow
server) is started again, shown in ``/api/health``, and a run completes afterwards; a component that keeps dying
stops ``knflow up`` with a non-zero exit code naming it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from sklearn.datasets import load_iris

from infra.localservices import free_platform_ports
from knflow import Client
from tests.eventually import eventually_sync
from tests.live_platform import admin_token, knflow_up

pytestmark = pytest.mark.slow

COMPONENTS = ("broker", "functions", "gateway", "dashboard")
_http = urllib3.PoolManager(retries=False, timeout=2.0)


def up_env(data: Path, **platform: str) -> dict[str, str]:
    """The environment of a ``knflow up`` on free ports with its data in ``data`` (``platform``: its [platform])."""
    (data / "knflow.toml").write_text("")
    ports = free_platform_ports()
    extra = {f"KNFLOW_PLATFORM_{k.upper()}": v for k, v in platform.items()}
    env = {**os.environ, "KNFLOW_CONFIG": str(data / "knflow.toml"), "KNFLOW_DATA_DIR": str(data), **ports, **extra}
    return {**env, "KNFLOW_LOG_FORMAT": "text"}


def components(env: dict[str, str]) -> dict[str, dict[str, Any]] | None:
    """The components ``/api/health`` lists, by name; None while the knflow server does not answer."""
    try:
        answer = _http.request("GET", f"http://127.0.0.1:{env['KNFLOW_DASHBOARD_PORT']}/api/health")
    except urllib3.exceptions.HTTPError:
        return None
    return {c["name"]: c for c in answer.json()["components"]} if answer.status == 200 else None


def all_running(env: dict[str, str]) -> dict[str, dict[str, Any]] | None:
    found = components(env)
    return found if found and len(found) == 4 and all(c["state"] == "running" for c in found.values()) else None


def running_again(env: dict[str, str], name: str, before: dict[str, dict[str, Any]]) -> bool:
    """Whether every component runs and ``name`` is another process than ``before``."""
    found = all_running(env)
    return bool(found) and found[name]["pid"] != before[name]["pid"]  # type: ignore[index]


def test_each_component_killed_is_started_again_and_a_run_completes_afterwards(tmp_path: Path) -> None:
    env = up_env(tmp_path)
    with knflow_up(env, tmp_path) as up:
        before = eventually_sync(lambda: all_running(env), 30, "every component running in /api/health")
        for name in COMPONENTS:
            os.kill(before[name]["pid"], signal.SIGKILL)
            eventually_sync(lambda: running_again(env, name, before), 90, f"the {name} running again")  # noqa: B023
        after = eventually_sync(lambda: all_running(env), 30, "every component running")
        for name in COMPONENTS:
            assert (after[name]["restarts"], after[name]["last_exit"]) == (1, "was killed by SIGKILL"), after[name]

        x, y = load_iris(return_X_y=True)
        client = Client(f"http://127.0.0.1:{env['KNFLOW_DASHBOARD_PORT']}", token=admin_token(env))
        run = client.submit(
            (x, y), dataset="iris", options={"model_name": "iris", "train": {"model": "mlp", "epochs": 5}}
        )
        outcome = run.wait(timeout=300)
        assert outcome.status == "deployed", outcome.summary()
        assert run.infer(x[:4])["probabilities"].shape == (4, 3)
        assert up.poll() is None
    assert up.returncode == 0
    out = (tmp_path / "up.out").read_text()
    for name in COMPONENTS:
        assert f"the {name} was killed by SIGKILL; starting it again in 1.0s" in out
        assert f"{name} is running again" in out


def test_a_component_that_keeps_dying_stops_knflow_up_with_an_error_naming_it(tmp_path: Path) -> None:
    # a backoff long enough that the test binds the dead gateway's port before the first restart can take it again
    env = up_env(tmp_path, restart_limit="2", restart_backoff_s="2", restart_window_s="120")
    port = int(env["KNFLOW_GATEWAY_PORT"])
    with knflow_up(env, tmp_path) as up:
        gateway = eventually_sync(lambda: all_running(env), 30, "every component running")["gateway"]
        os.kill(gateway["pid"], signal.SIGKILL)
        with taken(port):  # every gateway started again finds its port taken and exits
            eventually_sync(lambda: up.poll() is not None, 60, "knflow up to give up")
    out = (tmp_path / "up.out").read_text()
    assert up.returncode == 1, out
    assert "the gateway exited with code 1; starting it again" in out
    assert "address already in use" in out  # the tail of the gateway's log says why
    assert "knflow up: stopped: the gateway keeps failing: it exited with code 1 after 2 restart(s)" in out
    assert not (tmp_path / "platform" / "components.json").exists()


@contextlib.contextmanager
def taken(port: int) -> Iterator[None]:
    """A listening socket on 127.0.0.1:port while the block runs (bound as soon as the port is free)."""
    with socket.socket() as sock:
        # as servers do: the dead gateway's closed connections (TIME_WAIT for a minute) must not keep the port
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        eventually_sync(lambda: _bound(sock, port), 10, f"port {port} to be free")
        sock.listen()
        yield


def _bound(sock: socket.socket, port: int) -> bool:
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True
