"""The experiment spec (Katib's shape): objective, search space, algorithm, trial budget, early stopping."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from functions.ml.metrics import maximized
from infra.errors import InvalidRequest

ALGORITHMS = ("random", "grid", "tpe", "hyperband")
TYPES = ("double", "int", "categorical")


@dataclass(frozen=True)
class Parameter:
    """One dimension of the search space: a double or int range (optionally log scale) or a list of choices."""

    name: str
    type: str
    min: float | None = None
    max: float | None = None
    log: bool = False
    step: float | None = None
    values: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Objective:
    """The metric a trial reports, its direction, and an optional goal that ends the experiment when reached."""

    metric: str = "val_accuracy"
    type: str = "maximize"
    goal: float | None = None

    def better(self, a: float, b: float) -> bool:
        """Whether value ``a`` is strictly better than ``b``."""
        return a > b if self.type == "maximize" else a < b

    def reached(self, value: float) -> bool:
        return self.goal is not None and (value >= self.goal if self.type == "maximize" else value <= self.goal)


@dataclass(frozen=True)
class EarlyStopping:
    """Katib's median stopping rule: stop a trial whose best value at step s is worse than the median of
    the completed trials' running averages at step s."""

    min_trials_required: int = 3
    start_step: int = 2


@dataclass(frozen=True)
class ExperimentSpec:
    """A whole experiment."""

    objective: Objective
    parameters: tuple[Parameter, ...]
    algorithm: str = "tpe"
    settings: dict[str, Any] = field(default_factory=dict)
    max_trials: int = 8
    parallel_trials: int = 2
    max_failed_trials: int = 3
    early_stopping: EarlyStopping | None = None
    seed: int = 0


def parse_spec(raw: dict[str, Any]) -> ExperimentSpec:
    """A spec from JSON; Katib's names (maxTrialCount, parameterType, feasibleSpace ...) are accepted.

    A bad spec raises InvalidRequest.
    """
    if not isinstance(raw, dict):
        raise InvalidRequest("the tuning spec must be a JSON object")
    obj = raw.get("objective") or {}
    metric = obj.get("metric", obj.get("objectiveMetricName", "val_accuracy"))
    # without a type, the metric's name says which way is better (losses and errors are minimized)
    objective = Objective(metric, obj.get("type") or ("maximize" if maximized(metric) else "minimize"), obj.get("goal"))
    if objective.type not in ("maximize", "minimize"):
        raise InvalidRequest(f"objective.type must be maximize or minimize, got {objective.type!r}")
    algo = raw.get("algorithm", "tpe")
    name, settings = (
        (algo.get("name", algo.get("algorithmName")), algo.get("settings", {}))
        if isinstance(algo, dict)
        else (algo, {})
    )
    if name not in ALGORITHMS:
        raise InvalidRequest(f"unknown search algorithm {name!r} (one of {', '.join(ALGORITHMS)})")
    params = tuple(_parameter(p) for p in raw.get("parameters", []))
    if not params:
        raise InvalidRequest("the tuning spec has no parameters to search")
    es = raw.get("earlyStopping")
    spec = ExperimentSpec(
        objective=objective,
        parameters=params,
        algorithm=name,
        settings=dict(settings),
        max_trials=int(raw.get("maxTrialCount", 8)),
        parallel_trials=int(raw.get("parallelTrialCount", 2)),
        max_failed_trials=int(raw.get("maxFailedTrialCount", 3)),
        early_stopping=EarlyStopping(int(es.get("minTrialsRequired", 3)), int(es.get("startStep", 2))) if es else None,
        seed=int(raw.get("seed", 0)),
    )
    if spec.max_trials < 1 or spec.parallel_trials < 1:
        raise InvalidRequest("maxTrialCount and parallelTrialCount must be at least 1")
    return spec


def _parameter(raw: dict[str, Any]) -> Parameter:
    space = raw.get("feasibleSpace", raw)
    ptype = raw.get("type", raw.get("parameterType"))
    ptype = "categorical" if ptype == "discrete" else ptype
    name = raw.get("name")
    if not name or ptype not in TYPES:
        raise InvalidRequest(f"parameter {name!r}: type must be one of {TYPES}")
    if ptype == "categorical":
        values = tuple(space.get("values", space.get("list", ())))
        if not values:
            raise InvalidRequest(f"parameter {name!r}: a categorical parameter needs values")
        return Parameter(name, ptype, values=values)
    try:
        low, high = float(space["min"]), float(space["max"])
    except (KeyError, TypeError, ValueError):
        raise InvalidRequest(f"parameter {name!r}: a {ptype} parameter needs numeric min and max") from None
    log = bool(space.get("log", space.get("distribution") == "logUniform"))
    if not low < high or (log and low <= 0):
        raise InvalidRequest(f"parameter {name!r}: need min < max (and min > 0 on a log scale)")
    step = space.get("step")
    return Parameter(name, ptype, low, high, log, float(step) if step is not None else None)
