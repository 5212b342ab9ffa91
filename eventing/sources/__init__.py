"""Event sources: turn the outside world (bucket notifications, webhooks, a schedule) into CloudEvents."""

from __future__ import annotations

from typing import Any

from infra.settings import Settings


def default_sources(settings: Settings) -> list[Any]:
    """The sources the broker runs from its settings."""
    return []
