"""The ``knflow`` command and the platform it composes from functions, eventing, serving and infra.

``from knflow import Client`` gives the client of a running platform (``knflow.client``); it is imported on
first use, so the platform's own processes do not pay for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from infra.version import VERSION as __version__

__all__ = ["Client", "Run", "__version__"]

if TYPE_CHECKING:
    from knflow.client import Client, Run


def __getattr__(name: str) -> Any:
    if name in ("Client", "Run"):
        from knflow import client

        return getattr(client, name)
    raise AttributeError(f"module 'knflow' has no attribute {name!r}")
