"""Entries for tests/infra/test_forkserver.py: what a child forked by the fork server runs."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from infra.forkserver import notify

PRELOAD = ("colorsys",)
OPTIONAL_PRELOAD = ("knflow_has_no_such_module",)


def child(spec: dict[str, Any], context: Any, ctl: int) -> None:
    """Report what the child sees, then exit with the spec's code (or wait to be killed)."""
    preloaded = "colorsys" in sys.modules
    notify(ctl, kind="hello", pid=os.getpid(), name=spec["name"], context=context, preloaded=preloaded)
    if spec.get("wait"):
        time.sleep(60)
    raise SystemExit(spec.get("code", 0))
