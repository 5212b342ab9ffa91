"""``python -m functions.distributed.launch [torchrun options] -m MODULE ARGS``: PyTorch's elastic agent
(``torch.distributed.run``, what ``torchrun`` runs) tied to the process that started it.

The agent dies with its parent (Linux ``PR_SET_PDEATHSIG``) and hands its own pid to its workers, which die with it,
so a train step that is killed leaves no worker behind. Standard library and PyTorch only: it also runs under the
interpreter of a user's environment.
"""

from __future__ import annotations

import os
import sys

from functions.usertrain.channel import PARENT_ENV, follow_parent

#: one machine, no restart: a worker that dies fails the attempt, and the redelivered event resumes it
LOCAL_OPTIONS = ("--standalone", "--nnodes=1", "--max-restarts=0", "--monitor-interval=0.1")


def launch_command(python: str, workers: int, target: list[str]) -> list[str]:
    """The command that runs ``target`` (``-m MODULE ARGS``) as ``workers`` ranks on this machine."""
    return [python, "-m", "functions.distributed.launch", *LOCAL_OPTIONS, f"--nproc-per-node={workers}", *target]


def main(argv: list[str]) -> None:
    follow_parent()
    os.environ[PARENT_ENV] = str(os.getpid())  # the workers follow the agent
    from torch.distributed.run import main as torchrun

    torchrun(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
