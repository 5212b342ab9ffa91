"""An experiment's state in the store (``runs/<runid>/experiment.json``): its spec, its trials and their results."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from functions.tuning.spec import ExperimentSpec, parse_spec
from infra import cas
from infra.errors import NotFound
from infra.store import ArtifactStore

REQUESTED, SUCCEEDED, EARLY_STOPPED, FAILED = "Requested", "Succeeded", "EarlyStopped", "Failed"
FINISHED = (SUCCEEDED, EARLY_STOPPED, FAILED)
RUNNING, DONE = "Running", "Done"


@dataclass(frozen=True)
class Trial:
    """One trial: its assignments, its status, its objective value and learning curve (objective per epoch)."""

    id: str
    index: int
    params: dict[str, Any]
    status: str = REQUESTED
    value: float | None = None
    curve: tuple[float, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    requested_by: str | None = None  # the trial whose result asked for this one (None: asked for at the start)
    recorded_from: str | None = None  # the id of the event whose result this trial holds

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def scored(self) -> bool:
        """Finished with an objective value (succeeded or stopped early)."""
        return self.status in (SUCCEEDED, EARLY_STOPPED) and self.value is not None


@dataclass
class Experiment:
    """The whole state tune keeps between invocations; tune itself holds nothing in memory."""

    runid: str
    spec_raw: dict[str, Any]
    features: dict[str, Any]
    trials: dict[str, Trial] = field(default_factory=dict)
    status: str = RUNNING
    best: str | None = None
    reason: str = ""

    @functools.cached_property
    def spec(self) -> ExperimentSpec:
        return parse_spec(self.spec_raw)  # parsed once: spec_raw is not changed after the experiment is made

    def ordered(self) -> list[Trial]:
        return sorted(self.trials.values(), key=lambda t: t.index)

    def count(self, *statuses: str) -> int:
        return sum(1 for t in self.trials.values() if t.status in statuses)

    def best_trial(self) -> Trial | None:
        """The scored trial with the best objective value (earliest on ties)."""
        objective = self.spec.objective
        best: Trial | None = None
        for trial in self.ordered():
            if trial.scored and (best is None or objective.better(trial.value, best.value)):  # type: ignore[arg-type]  # both scored
                best = trial
        return best

    def to_dict(self) -> dict[str, Any]:
        raw = dataclasses.asdict(self)
        raw["trials"] = {k: dataclasses.asdict(t) for k, t in self.trials.items()}
        return raw

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Experiment:
        trials = {k: Trial(**{**t, "curve": tuple(t.get("curve", ()))}) for k, t in raw.get("trials", {}).items()}
        return cls(
            raw["runid"],
            raw["spec_raw"],
            raw["features"],
            trials,
            raw["status"],
            raw.get("best"),
            raw.get("reason", ""),
        )


def experiment_key(runid: str) -> str:
    """Where an experiment's state lives."""
    return f"runs/{runid}/experiment.json"


def trial_id(index: int) -> str:
    return f"trial-{index:04d}"


def load_experiment(store: ArtifactStore, runid: str) -> Experiment | None:
    """The stored experiment of a run, or None."""
    try:
        return Experiment.from_dict(json.loads(store.get(experiment_key(runid))))
    except NotFound:
        return None


def save_experiment(store: ArtifactStore, experiment: Experiment) -> None:
    """Write the experiment whole (the store's put is atomic: readers see the old state or the new one)."""
    store.put(experiment_key(experiment.runid), _encode(experiment), content_type="application/json")


def update_experiment(
    store: ArtifactStore, runid: str, change: Callable[[Experiment | None], Experiment | None]
) -> Experiment | None:
    """Apply ``change`` to the stored experiment (``None`` if there is none) by compare-and-swap: when another
    tune replica wrote in between, it is read again and ``change`` re-applied, so no update is lost.
    ``change`` returns the new experiment, or ``None`` to leave it; the experiment stored after is returned."""

    def apply(raw: bytes | None) -> bytes | None:
        new = change(Experiment.from_dict(json.loads(raw)) if raw else None)
        return None if new is None else _encode(new)

    raw = cas.update(store, experiment_key(runid), apply)
    return Experiment.from_dict(json.loads(raw)) if raw else None


def _encode(experiment: Experiment) -> bytes:
    return json.dumps(experiment.to_dict(), sort_keys=True).encode()
