"""Where the broker keeps its triggers across restarts: one JSON file of Knative Trigger resources, replaced whole."""

from __future__ import annotations

import json
from pathlib import Path

from eventing.triggers import Trigger
from infra.atomic import write_json
from infra.settings import Settings


def state_dir(settings: Settings) -> Path:
    """Where the broker keeps its own state (triggers, ping sources): the embedded log's directory, else
    ``data_dir/broker``."""
    if settings.broker.scheme == "embedded" and settings.broker.path is not None:
        return Path(settings.broker.path)
    return settings.data_dir / "broker"


class TriggerFile:
    """``{name: {"spec": ..., "metadata": ...}}`` in ``path`` (bare specs read too); saves replace it atomically."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self) -> dict[str, Trigger]:
        if not self.path.is_file():
            return {}
        specs = json.loads(self.path.read_text())
        return {name: Trigger.from_spec(name, spec) for name, spec in specs.items()}

    def save(self, triggers: dict[str, Trigger]) -> None:
        write_json(self.path, {name: t.to_resource() for name, t in sorted(triggers.items())}, indent=2)
