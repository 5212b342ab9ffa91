"""The pipe pair between the train step and the child running a user's entrypoint: one JSON object per line.

The child sends ``report`` (answered ``{"stop": bool}``), ``checkpoint`` (answered once stored), then ``result`` or
``error`` and exits. Standard library only: the child may run in an environment of the user's.
"""

from __future__ import annotations

import json
import os
from typing import Any

#: the child's environment variable holding "<fd to read answers>,<fd to write messages>"
CHANNEL_ENV = "KNFLOW_TRAIN_CHANNEL"
#: the child's environment variable holding the train step's pid (the child exits when its parent is gone)
PARENT_ENV = "KNFLOW_TRAIN_PARENT"


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

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd, self.write_fd = read_fd, write_fd
        self._buffer = LineBuffer()
        self._answers: list[dict[str, Any]] = []

    @classmethod
    def from_env(cls) -> ChildChannel:
        read_fd, write_fd = (int(fd) for fd in os.environ[CHANNEL_ENV].split(","))
        for fd in (read_fd, write_fd):
            os.set_inheritable(fd, False)  # processes the user's code starts do not hold the pipe open
        return cls(read_fd, write_fd)

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
