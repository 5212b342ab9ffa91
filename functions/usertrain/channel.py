"""The channel between the train step and the child running a user's entrypoint (rank 0 of several): a Unix socket
in the job directory, one JSON object per line; and the lifeline that ends a child with its parent.

The child sends ``report`` (answered ``{"stop": bool}``), ``checkpoint`` (answered once stored), then ``result`` or
``error`` and exits. A socket path, unlike inherited pipes, reaches a worker started by PyTorch's elastic agent.
Standard library only: the child may run in an environment of the user's.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import sys
from typing import Any

#: the child's environment variable holding the path of the train step's Unix socket
CHANNEL_ENV = "KNFLOW_TRAIN_CHANNEL"
#: the child's environment variable holding its parent's pid (the child exits when its parent is gone)
PARENT_ENV = "KNFLOW_TRAIN_PARENT"
_PR_SET_PDEATHSIG = 1


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def write_all(fd: int, data: bytes) -> None:
    """Write every byte (a pipe may take fewer than offered)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class LineBuffer:
    """Bytes in, whole JSON lines out."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        lines = (self._pending + chunk).split(b"\n")
        self._pending = lines.pop()
        return [json.loads(line) for line in lines if line.strip()]


class ChildChannel:
    """The child's end: send a message, wait for the answer."""

    def __init__(self, sock: socket.socket) -> None:
        self._socket = sock  # kept: the descriptors below live as long as it does
        self.read_fd = self.write_fd = sock.fileno()
        self._buffer = LineBuffer()
        self._answers: list[dict[str, Any]] = []

    @classmethod
    def from_env(cls) -> ChildChannel:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # not inherited by what the user's code starts
        sock.connect(os.environ[CHANNEL_ENV])
        return cls(sock)

    def send(self, message: dict[str, Any]) -> None:
        write_all(self.write_fd, encode(message))

    def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send and wait for the one answer; EOFError when the train step has gone."""
        self.send(message)
        while not self._answers:
            chunk = os.read(self.read_fd, 65536)
            if not chunk:
                raise EOFError("the train step closed the channel")
            self._answers += self._buffer.feed(chunk)
        return self._answers.pop(0)


def follow_parent() -> None:
    """Die with the parent named by PARENT_ENV (Linux): a killed train step leaves no training running behind it."""
    parent = int(os.environ.get(PARENT_ENV, "0"))
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent and os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
