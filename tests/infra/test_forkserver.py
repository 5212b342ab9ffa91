"""knflow's one fork server (``infra.forkserver``): real forked children, their notices, and their lifetimes."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from infra.errors import Unavailable
from infra.forkserver import ForkServer
from tests.eventually import eventually

pytestmark = pytest.mark.asyncio
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ENTRY = "forkserver_entries:child"


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


class Notices(list[dict[str, Any]]):
    def of(self, kind: str, pid: int) -> list[dict[str, Any]]:
        return [n for n in self if n["kind"] == kind and n["pid"] == pid]


def server(context: Any = None) -> tuple[ForkServer, Notices]:
    notices = Notices()
    return ForkServer(ENTRY, context, notices.append, env={"PYTHONPATH": f"{ROOT}:{HERE}"}), notices


async def test_a_child_gets_the_context_and_preloads_and_its_exit_code_is_reported_with_its_name() -> None:
    forks, notices = server({"settings": 1})
    try:
        pid = await forks.spawn({"name": "alpha", "code": 3})
        await eventually(lambda: notices.of("exit", pid), what="the child's exit notice")
        hello = notices.of("hello", pid)
        assert hello == [{"kind": "hello", "pid": pid, "name": "alpha", "context": {"settings": 1}, "preloaded": True}]
        assert notices.of("exit", pid) == [{"kind": "exit", "pid": pid, "name": "alpha", "code": 3}]
    finally:
        await forks.stop()


async def test_spawns_sent_together_each_get_their_own_child() -> None:
    forks, notices = server()
    try:
        pids = await asyncio.gather(*(forks.spawn({"name": f"c{i}"}) for i in range(8)))
        assert len(set(pids)) == 8
        await eventually(lambda: all(notices.of("exit", p) for p in pids), what="every child's exit")
        assert [notices.of("hello", p)[0]["name"] for p in pids] == [f"c{i}" for i in range(8)]
    finally:
        await forks.stop()


async def test_children_go_when_the_server_stops() -> None:
    forks, notices = server()
    pids = [await forks.spawn({"name": f"w{i}", "wait": True}) for i in range(2)]
    await eventually(lambda: all(notices.of("hello", p) for p in pids), what="both children running")
    await forks.stop()
    assert not forks.running
    await eventually(lambda: not any(alive(p) for p in pids), what="the children to die with their server")


async def test_a_killed_server_reports_its_children_gone_and_the_next_spawn_starts_a_new_one() -> None:
    forks, notices = server()
    try:
        pid = await forks.spawn({"name": "orphan", "wait": True})
        await eventually(lambda: notices.of("hello", pid), what="the child running")
        first = forks.process
        assert first is not None
        os.kill(first.pid, signal.SIGKILL)
        await eventually(lambda: notices.of("exit", pid), what="the lost child reported")
        assert notices.of("exit", pid) == [{"kind": "exit", "pid": pid, "name": "orphan", "code": None}]
        assert not forks.running
        again = await forks.spawn({"name": "after", "code": 0})
        assert forks.process is not first and forks.running
        await eventually(lambda: notices.of("exit", again), what="the new server's child")
    finally:
        await forks.stop()


async def test_a_server_that_cannot_start_is_unavailable() -> None:
    forks = ForkServer("forkserver_entries_missing:child", env={"PYTHONPATH": f"{ROOT}:{HERE}"})
    with pytest.raises(Unavailable, match="exited while starting"):
        await forks.spawn({"name": "never"})
