"""A run's options (label column, task, categorical columns, model name, experiment, training parameters, tuning
spec, deploy policy, drift policy) and where they live.

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

from functions.ml.metrics import CLASSIFICATION, DEFAULT_OBJECTIVE, check_metric, check_task
from infra.errors import InvalidRequest, NotFound
from infra.store import ArtifactStore

DATASET_OPTIONS = "knflow.json"
MAX_NAME = 200


@dataclass(frozen=True)
class RunOptions:
    """What a run asks for. ``tuning`` is an experiment spec (see functions.tuning.spec) or None to train once."""

    label: str = "label"
    task: str = CLASSIFICATION
    categorical: list[str] = field(default_factory=list)
    model_name: str | None = None
    experiment: str | None = None  # the named group of runs it belongs to (None: its data set's name)
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
    if raw is not None and not isinstance(raw, dict):
        raise InvalidRequest(f"{where}: run options must be a JSON object, not {type(raw).__name__}")
    raw = dict(raw or {})
    known = {f.name for f in dataclasses.fields(RunOptions)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InvalidRequest(f"{where}: unknown run options {unknown} (known: {sorted(known)})")
    try:
        options = RunOptions(**raw)
    except TypeError as exc:
        raise InvalidRequest(f"{where}: bad run options ({exc})") from None
    _check_types(options, where)
    try:
        check_task(options.task)
    except InvalidRequest as exc:
        raise InvalidRequest(f"{where}: {exc}") from None
    options = dataclasses.replace(options, tuning=with_objective(options.tuning, options.task))
    _check_sections(options, where)
    return options


def _check_types(options: RunOptions, where: str) -> None:
    """Refuse options of the wrong JSON type before the sections are parsed."""
    for name in ("val_fraction", "test_fraction"):
        value = getattr(options, name)
        if not isinstance(value, int | float) or not 0 < value < 0.5:
            raise InvalidRequest(f"{where}: {name} must be a number in (0, 0.5), got {value!r}")
    if not isinstance(options.label, str) or not options.label:
        raise InvalidRequest(f"{where}: label must be a column name")
    if options.experiment is not None and not _is_name(options.experiment):
        raise InvalidRequest(
            f"{where}: experiment must be a name of 1 to {MAX_NAME} characters, got {options.experiment!r}"
        )
    if not isinstance(options.categorical, list) or not all(isinstance(c, str) and c for c in options.categorical):
        raise InvalidRequest(f"{where}: categorical must be a list of column names, got {options.categorical!r}")
    for name in ("train", "tuning", "deploy", "drift"):
        value = getattr(options, name)
        if not isinstance(value, dict) and not (name == "tuning" and value is None):
            raise InvalidRequest(f"{where}: {name} must be a JSON object, got {type(value).__name__}")


def _is_name(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_NAME and value.isprintable() and value.strip() == value


def experiment_of(options: RunOptions, dataset: str) -> str:
    """The experiment a run belongs to: the one its options name, else its data set."""
    return options.experiment or dataset


def with_objective(tuning: dict[str, Any] | None, task: str) -> dict[str, Any] | None:
    """A tuning spec with the task's default objective (val_accuracy, or val_rmse minimized) when it names none."""
    if not isinstance(tuning, dict) or not tuning:
        return tuning
    objective = tuning.get("objective") or {}
    if not isinstance(objective, dict) or "metric" in objective or "objectiveMetricName" in objective:
        return tuning
    metric = DEFAULT_OBJECTIVE[task]
    return {**tuning, "objective": {**objective, "metric": metric}}


def _check_sections(options: RunOptions, where: str) -> None:
    """Refuse bad training parameters, tuning specs, deploy and drift policies when the run starts, not steps later."""
    from functions.deploy import parse_policy
    from functions.drift import parse_policy as parse_drift
    from functions.ml.params import parse_params
    from functions.tuning.spec import parse_spec
    from functions.usertrain.options import parse_entrypoint, uses_entrypoint

    section = "train"
    try:
        if uses_entrypoint(options.train):
            if options.task != "classification":
                raise InvalidRequest(f"train.entrypoint supports classification runs only for now, not {options.task}")
            parse_entrypoint(options.train, options.seed)  # the other keys are the user's code's parameters
        else:
            parse_params(options.train)
        section = "tuning"
        if options.tuning:
            check_metric(parse_spec(options.tuning).objective.metric, options.task, "the tuning objective")
        section = "deploy"
        parse_policy(options.deploy, options.task)
        section = "drift"
        parse_drift(options.drift)
    except InvalidRequest as exc:
        raise InvalidRequest(f"{where}: {exc}") from None
    except (AttributeError, TypeError, ValueError) as exc:  # a value of the wrong JSON type inside the section
        raise InvalidRequest(f"{where}: bad {section} options ({type(exc).__name__}: {exc})") from None


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
