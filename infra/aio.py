"""Running knflow's servers: one asyncio entry point, on uvloop when it is installed."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def run(main: Coroutine[Any, Any, Any]) -> None:
    """``asyncio.run(main)`` on uvloop when it is installed (it roughly halves the HTTP overhead per request)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)
