"""A run's options (label column, model name, training parameters, tuning spec, deploy policy, drift policy) and where
they live.

Options come from, in order: ``options`` in the ``data.arrived`` event data; else the object
``raw/<dataset>/knflow.json`` beside the data (for runs started by a bucket notification, which
cannot carry options); else defaults. Ingest resolves them once and writes
``runs/<runid>/run.json``; every later step reads that object by the event's runid.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from infra.errors import InvalidRequest, NotFound
from infra.store import ArtifactStore

DATASET_OPTIONS = "knflow.json"


@dataclass(frozen=True)
class RunOptions:
    """What a run asks for. ``tuning`` is an experiment spec (see functions.tuning.spec) or None to train once."""

    label: str = "label"
    model_name: str | None = None
    seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    train: dict[str, Any] = field(default_factory=dict)
    tuning: dict[str, Any] | None = None
    deploy: dict[str, Any] = field(default_factory=dict)
    drift: dict[str, Any] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        """``tune`` when the run asks for tuning, else ``train`` (the ``mode`` extension of features.ready)."""
        return "tune" if self.tuning else "train"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_options(raw: dict[str, Any] | None, where: str) -> RunOptions:
    """Options from a JSON object; unknown keys or bad types raise InvalidRequest naming ``where``."""
    raw = dict(raw or {})
    known = {f.name for f in dataclasses.fields(RunOptions)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InvalidRequest(f"{where}: unknown run options {unknown} (known: {sorted(known)})")
    try:
        options = RunOptions(**raw)
    except TypeError as exc:
        raise InvalidRequest(f"{where}: bad run options ({exc})") from None
    for name in ("val_fraction", "test_fraction"):
        value = getattr(options, name)
        if not isinstance(value, int | float) or not 0 < value < 0.5:
            raise InvalidRequest(f"{where}: {name} must be a number in (0, 0.5), got {value!r}")
    if not isinstance(options.label, str) or not options.label:
        raise InvalidRequest(f"{where}: label must be a column name")
    _check_sections(options, where)
    return options


def _check_sections(options: RunOptions, where: str) -> None:
    """Refuse bad training parameters, tuning specs, deploy and drift policies when the run starts, not steps later."""
    from functions.deploy import parse_policy
    from functions.drift import parse_policy as parse_drift
    from functions.ml.params import parse_params
    from functions.tuning.spec import parse_spec

    try:
        parse_params(options.train)
        if options.tuning:
            parse_spec(options.tuning)
        parse_policy(options.deploy)
        parse_drift(options.drift)
    except InvalidRequest as exc:
        raise InvalidRequest(f"{where}: {exc}") from None


def run_key(runid: str) -> str:
    """Where a run's resolved options live."""
    return f"runs/{runid}/run.json"


def resolve_options(store: ArtifactStore, event_options: dict[str, Any] | None, dataset: str) -> RunOptions:
    """The options of a new run: the event's, else the data set's ``knflow.json``, else defaults."""
    if event_options is not None:
        return parse_options(event_options, "data.arrived options")
    key = f"raw/{dataset}/{DATASET_OPTIONS}"
    try:
        raw = json.loads(store.get(key))
    except NotFound:
        return RunOptions()
    except ValueError as exc:
        raise InvalidRequest(f"{key}: not valid JSON ({exc})") from None
    return parse_options(raw, key)


def save_options(store: ArtifactStore, runid: str, options: RunOptions) -> None:
    """Record a run's options (idempotent: the same options give the same object)."""
    store.put(run_key(runid), json.dumps(options.to_dict(), sort_keys=True).encode(), content_type="application/json")


def load_options(store: ArtifactStore, runid: str | None) -> RunOptions:
    """A run's options; defaults when the run has none recorded."""
    if not runid:
        return RunOptions()
    try:
        return parse_options(json.loads(store.get(run_key(runid))), run_key(runid))
    except NotFound:
        return RunOptions()
