"""What a model replica runs: forked from knflow's one fork server, with numpy and onnxruntime already imported.

Forking a warm parent skips interpreter start and imports (most of a cold start). The gateway keeps an
``infra.forkserver.ForkServer`` on ``ENTRY`` (``replicas.replica_server``) and sends one ``ReplicaSpec`` (as a
dict) per replica; a replica dies with the fork server, which exits when the gateway goes away.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from infra.aio import run
from serving import replica

ENTRY = "serving.zygote:replica_main"
PRELOAD = ("numpy", "onnxruntime")  # imported once in the fork server, so forked replicas start warm
OPTIONAL_PRELOAD = ("uvloop",)
log = logging.getLogger(__name__)


def replica_main(spec: dict[str, Any], _context: Any, ctl: int) -> None:
    """In the forked child: serve one replica until the gateway closes its socket or the server goes."""
    os.close(ctl)  # a replica's readiness is its socket accepting, not a notice
    logging.basicConfig(level=os.environ.get("KNFLOW_ZYGOTE_LOG", "WARNING"), stream=sys.stderr)
    try:
        run(replica.serve(replica.ReplicaSpec.from_dict(spec)))
    except BaseException:
        log.exception("replica for %s exited", spec.get("socket"))
        raise SystemExit(1) from None
