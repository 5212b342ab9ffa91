"""Run the child that runs a user's entrypoint (or its workers, under PyTorch's elastic agent), serve its channel,
and tell how it ended.

The child has a session of its own (a signal to its process group cannot reach the worker), an environment without
knflow's credentials, its output in a log file, and it dies with the worker. Whatever it leaves running is killed
with its process group when it ends.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from functions.distributed.launch import launch_command
from functions.usertrain.channel import CHANNEL_ENV, PARENT_ENV, LineBuffer, encode, write_all
from functions.usertrain.code import UserCode

#: the packages of knflow an interpreter of the user's needs on its path to run the child
HARNESS_PACKAGES = ("functions", "serving", "infra")
_SECRET_PREFIXES = ("AWS_", "MINIO_", "KNFLOW_", "K_")
_SECRET_WORDS = ("SECRET", "TOKEN", "PASSWORD", "CREDENTIAL")
POLL_S = 0.25


@dataclass
class ChildOutcome:
    """How the child ended: its last ``result`` or ``error`` message, its exit status, whether time ran out."""

    returncode: int | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    timed_out: bool = False
    malformed: list[str] = field(default_factory=list)


def run_child(
    code: UserCode,
    jobdir: Path,
    on_message: Callable[[dict[str, Any]], dict[str, Any] | None],
    *,
    log_path: Path,
    timeout_s: float | None,
    workers: int = 1,
) -> ChildOutcome:
    """Start ``python -m functions.usertrain.child JOBDIR`` (``workers`` > 1: that many of it under PyTorch's elastic
    agent), answer the messages of the one child (rank 0) that connects with ``on_message`` until it exits."""
    target = ["-m", "functions.usertrain.child", str(jobdir)]
    argv = [code.python, *target] if workers == 1 else launch_command(code.python, workers, target)
    with contextlib.closing(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)) as listener:
        path = jobdir / "channel"
        listener.bind(str(path))
        listener.listen(1)
        env = child_environment(code, jobdir, str(path)) | thread_environment(workers)
        proc = spawn(argv, env, jobdir, log_path)
        try:
            outcome = _serve(proc, listener, on_message, timeout_s)
        finally:
            kill_group(proc)
    outcome.returncode = proc.returncode
    return outcome


def spawn(argv: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> subprocess.Popen:
    """A child in a session of its own (a signal to its group cannot reach the train step), output to the log."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def wait(proc: subprocess.Popen, timeout_s: float | None) -> bool:
    """Wait for the child to exit (without reaping it); False when ``timeout_s`` ran out first."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while not _exited(proc):
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


def _serve(
    proc: subprocess.Popen, listener: socket.socket, on_message: Callable, timeout_s: float | None
) -> ChildOutcome:
    outcome, buffer = ChildOutcome(), LineBuffer()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    conn: socket.socket | None = None
    open_channel = True
    try:
        while True:
            if deadline is not None and time.monotonic() > deadline:
                outcome.timed_out = True
                break
            waiting_on = [conn or listener] if open_channel else []
            readable = select.select(waiting_on, [], [], POLL_S)[0] if waiting_on else []
            if readable and conn is None:
                conn = listener.accept()[0]
            elif readable and conn is not None:
                chunk = conn.recv(65536)
                open_channel = bool(chunk)
                for message in _messages(buffer, chunk, outcome):
                    _dispatch(message, on_message, conn.fileno(), outcome)
            elif _exited(proc):
                break  # exited, and nothing more to read (or the channel is closed)
            elif not open_channel:
                time.sleep(POLL_S)  # the channel closed before the process ended: wait for its exit
    finally:
        if conn is not None:
            conn.close()
    return outcome


def _exited(proc: subprocess.Popen) -> bool:
    """Whether the child has exited, without reaping it: its pid (its process group's id) stays taken until the
    group is killed, so the kill cannot reach a group that reused the number."""
    return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _messages(buffer: LineBuffer, chunk: bytes, outcome: ChildOutcome) -> list[dict[str, Any]]:
    try:
        return buffer.feed(chunk)
    except ValueError as exc:
        outcome.malformed.append(str(exc)[:200])
        return []


def _dispatch(message: dict[str, Any], on_message: Callable, write_fd: int, outcome: ChildOutcome) -> None:
    if message.get("op") == "result":
        outcome.result = message
    elif message.get("op") == "error":
        outcome.error = message
    else:
        answer = on_message(message)
        if answer is not None:
            with contextlib.suppress(BrokenPipeError):  # the child died after asking; its exit tells the rest
                write_all(write_fd, encode(answer))


def kill_group(proc: subprocess.Popen) -> None:
    """Kill whatever is left of the child's session (it, or processes the user's code started), then reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def thread_environment(workers: int) -> dict[str, str]:
    """Each of ``workers`` processes computes on its share of the machine's cores."""
    return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // workers))} if workers > 1 else {}


def child_environment(code: UserCode, jobdir: Path, channel: str) -> dict[str, str]:
    """The worker's environment without knflow's settings and credentials, plus the channel and knflow's packages
    on the path (links in the job directory; an interpreter of the user's gets no other path of the worker's)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(_SECRET_PREFIXES) and not any(word in name.upper() for word in _SECRET_WORDS)
    }
    env.update({CHANNEL_ENV: channel, PARENT_ENV: str(os.getpid()), "PYTHONUNBUFFERED": "1"})
    # the child imports the knflow the worker runs, whichever interpreter it is and wherever knflow came from
    inherited = [] if code.own_environment else [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([str(_harness_path(jobdir)), *inherited])
    return env


def _harness_path(jobdir: Path) -> Path:
    """A directory of links to the worker's knflow packages."""
    import functions

    root = Path(functions.__file__).resolve().parent.parent
    path = jobdir / "knflow-path"
    path.mkdir(exist_ok=True)
    for package in HARNESS_PACKAGES:
        link = path / package
        if not link.exists():
            link.symlink_to(root / package, target_is_directory=True)
    return path
