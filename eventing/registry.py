"""Where the broker keeps its triggers across restarts: one JSON file of Knative Trigger specs, replaced atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from eventing.triggers import Trigger


class TriggerFile:
    """``{name: spec}`` in ``path``; every save is write-temp, fsync, rename."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self) -> dict[str, Trigger]:
        if not self.path.is_file():
            return {}
        specs = json.loads(self.path.read_text())
        return {name: Trigger.from_spec(name, spec) for name, spec in specs.items()}

    def save(self, triggers: dict[str, Trigger]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".triggers.")
        with os.fdopen(fd, "w") as out:
            json.dump({name: t.to_spec() for name, t in sorted(triggers.items())}, out, indent=2)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)
