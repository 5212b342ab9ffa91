"""The models panel: registered models, their versions (metrics, sha256, lineage) and aliases, from the registry.

Blocking (the registry reads the artifact store); the server calls these in a thread.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from infra.errors import NotFound
from serving.registry import ModelCard, ModelRegistry


def _version(card: ModelCard, aliases: dict[str, int]) -> dict[str, Any]:
    return {
        "version": card.version,
        "sha256": card.sha256,
        "size": card.size,
        "created": card.created,
        "metrics": card.metrics,
        "task": card.task,
        "classes": card.classes,
        "params": card.params,
        "lineage": card.lineage,
        "inputs": [asdict(t) for t in card.inputs],
        "outputs": [asdict(t) for t in card.outputs],
        "aliases": sorted(a for a, v in aliases.items() if v == card.version),
    }


def model_view(registry: ModelRegistry, name: str) -> dict[str, Any]:
    """One registered model: aliases and every version, newest first; ``NotFound`` if it is not registered."""
    versions = registry.versions(name)
    if not versions:
        raise NotFound(f"model {name!r} is not registered")
    aliases = registry.aliases(name)
    return {
        "name": name,
        "aliases": aliases,
        "latest": versions[-1].version,
        "versions": [_version(card, aliases) for card in reversed(versions)],
    }


def models_view(registry: ModelRegistry) -> dict[str, Any]:
    """Every registered model."""
    return {"models": [model_view(registry, name) for name in registry.models()]}
