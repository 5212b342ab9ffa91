"""The replica zygote: a process with numpy and onnxruntime already imported that forks replicas on request.

Forking a warm parent skips interpreter start and imports (most of a cold start). The gateway
writes one JSON ReplicaSpec per line on stdin; the zygote answers ``{"pid": N}`` per line on
stdout. A forked replica dies with the zygote (PR_SET_PDEATHSIG); the zygote exits, killing
its replicas, when its stdin closes (the gateway went away).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys

import numpy  # noqa: F401  (imported here so forked replicas start warm)
import onnxruntime  # noqa: F401
import orjson

with contextlib.suppress(ImportError):
    import uvloop  # noqa: F401  (warm import for replicas)

from infra.aio import run
from serving import replica

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1


def _child(spec: replica.ReplicaSpec) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    os.dup2(2, 1)  # stdout is the zygote's protocol pipe
    code = 0
    try:
        run(replica.serve(spec))
    except BaseException:
        log.exception("replica for %s exited", spec.socket)
        code = 1
    finally:
        os._exit(code)


def main() -> None:
    """Read specs from stdin, fork one replica per spec, report its pid."""
    logging.basicConfig(level=os.environ.get("KNFLOW_ZYGOTE_LOG", "WARNING"), stream=sys.stderr)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps replicas; no zombies
    children: set[int] = set()
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        spec = replica.ReplicaSpec.from_dict(orjson.loads(line))
        pid = os.fork()
        if pid == 0:
            _child(spec)
        children.add(pid)
        out.write(orjson.dumps({"pid": pid}) + b"\n")
        out.flush()
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
