"""Who holds a claim: a process named so that another process on the same machine can tell that it is gone.

A claim kept in the artifact store (a registration's idempotency key) records ``this_process()``; a process that
finds the claim taken asks ``gone(owner)``: True only when the owner ran on this machine (same boot) and no longer
runs (its pid is free, or taken by a process started later). Anywhere else the answer is False, and the claim's age
has to decide.
"""

from __future__ import annotations

import contextlib
import functools
import os


@functools.cache
def _boot_id() -> str:
    with contextlib.suppress(OSError), open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()
    return ""


def _started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22), None when there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19].decode() if len(fields) > 19 and fields[0] != b"Z" else None


def this_process() -> str:
    """This process as a claim's owner: ``<boot id>/<pid>/<start time>`` (empty parts where /proc cannot tell)."""
    pid = os.getpid()
    return f"{_boot_id()}/{pid}/{_started(pid) or ''}"


def gone(owner: object) -> bool:
    """Whether ``owner`` (a ``this_process()`` string) is a process of this machine's current boot that has ended."""
    if not isinstance(owner, str) or owner.count("/") != 2:
        return False
    boot, pid, started = owner.split("/")
    if not boot or boot != _boot_id() or not pid.isdigit() or not started:
        return False
    return _started(int(pid)) != started
