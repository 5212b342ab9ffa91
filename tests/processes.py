"""What tests ask of an OS process they started, or that the code under test started: is it still running?"""

from __future__ import annotations

import os
from pathlib import Path


def alive(pid: int) -> bool:
    """Whether ``pid`` runs, or has exited and waits for a parent that should reap it.

    A zombie whose parent is this test process (asyncio reaps it) or init (an orphan; init on some machines does not
    reap) counts as gone; one whose parent is another process counts as alive, so a parent that stops reaping its
    children (a runner's fork server, a gateway's replicas) is noticed."""
    try:
        state, parent = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[:2]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z" or int(parent) not in (os.getpid(), 1)
