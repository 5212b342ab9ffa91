"""Search algorithms as plain functions of (spec, trials so far) → next assignments: random, grid, TPE, Hyperband."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import optuna

from functions.tuning.experiment import Trial
from functions.tuning.spec import ExperimentSpec, Parameter

optuna.logging.set_verbosity(optuna.logging.WARNING)
GRID_POINTS = 4


@dataclass(frozen=True)
class Suggestion:
    """Assignments for a new trial, plus algorithm bookkeeping (Hyperband's bracket and rung)."""

    params: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)


def suggest(spec: ExperimentSpec, trials: list[Trial], count: int) -> list[Suggestion]:
    """Up to ``count`` new trials; fewer when the algorithm is exhausted or waits for running trials."""
    if count <= 0:
        return []
    algorithm = {"random": _random, "grid": _grid, "tpe": _tpe, "hyperband": _hyperband}[spec.algorithm]
    return algorithm(spec, sorted(trials, key=lambda t: t.index), count)


def sample(param: Parameter, rng: np.random.Generator) -> Any:
    """One random value of a parameter (log-uniform on a log scale)."""
    if param.type == "categorical":
        return param.values[int(rng.integers(len(param.values)))]
    low, high = param.min, param.max
    value = math.exp(rng.uniform(math.log(low), math.log(high))) if param.log else rng.uniform(low, high)  # type: ignore[arg-type]  # min, max set
    if param.type == "int":
        return int(min(max(round(value), low), high))  # type: ignore[arg-type,type-var]  # numeric parameters have min and max (spec validation)
    return float(value)


def _random(spec: ExperimentSpec, trials: list[Trial], count: int) -> list[Suggestion]:
    start = len(trials)
    out = []
    for index in range(start, start + count):
        rng = np.random.default_rng([spec.seed, index])  # trial n's values depend only on (seed, n)
        out.append(Suggestion({p.name: sample(p, rng) for p in spec.parameters}))
    return out


def grid_values(param: Parameter) -> list[Any]:
    """The grid points of one parameter: its values, its step, or GRID_POINTS points (log-spaced on a log scale)."""
    if param.type == "categorical":
        return list(param.values)
    low, high = float(param.min), float(param.max)  # type: ignore[arg-type]  # numeric parameters have min and max (spec validation)
    if param.step:
        points = list(np.arange(low, high + param.step / 2, param.step))
    elif param.log:
        points = list(np.geomspace(low, high, GRID_POINTS))
    else:
        points = list(np.linspace(low, high, GRID_POINTS))
    return sorted({round(v) for v in points}) if param.type == "int" else [float(v) for v in points]


def _grid(spec: ExperimentSpec, trials: list[Trial], count: int) -> list[Suggestion]:
    grid = itertools.product(*(grid_values(p) for p in spec.parameters))
    chosen = itertools.islice(grid, len(trials), len(trials) + count)
    return [Suggestion(dict(zip([p.name for p in spec.parameters], values, strict=True))) for values in chosen]


def _distribution(param: Parameter) -> optuna.distributions.BaseDistribution:
    if param.type == "categorical":
        return optuna.distributions.CategoricalDistribution(list(param.values))
    if param.type == "int":
        return optuna.distributions.IntDistribution(int(param.min), int(param.max), log=param.log)  # type: ignore[arg-type]  # see grid_values
    return optuna.distributions.FloatDistribution(param.min, param.max, log=param.log)  # type: ignore[arg-type]  # numeric parameters have min and max (spec validation)


def _tpe(spec: ExperimentSpec, trials: list[Trial], count: int) -> list[Suggestion]:
    """Optuna's TPE over a study rebuilt in memory from the stored trials (tune keeps no state of its own)."""
    dists = {p.name: _distribution(p) for p in spec.parameters}
    startup = int(spec.settings.get("n_startup_trials", 5))
    sampler = optuna.samplers.TPESampler(
        seed=spec.seed * 1000 + len(trials), n_startup_trials=startup, constant_liar=True
    )
    direction: Literal["minimize", "maximize"] = "maximize" if spec.objective.type == "maximize" else "minimize"
    study = optuna.create_study(direction=direction, sampler=sampler)
    for trial in trials:
        if trial.scored:
            study.add_trial(optuna.trial.create_trial(params=trial.params, distributions=dists, value=trial.value))
        elif trial.status == "Failed":
            study.add_trial(
                optuna.trial.create_trial(params=trial.params, distributions=dists, state=optuna.trial.TrialState.FAIL)
            )
    out = []
    for _ in range(count):
        asked = study.ask(dists)  # left running: with constant_liar the next ask avoids it
        out.append(Suggestion(dict(asked.params)))
    return out


def hyperband_plan(spec: ExperimentSpec) -> list[tuple[int, int, int, int]]:
    """(bracket, rung, trials, resource) for every rung of every bracket, in the order they run."""
    eta = int(spec.settings.get("eta", 3))
    r_max = int(spec.settings.get("r_max", 9))
    s_max = math.floor(math.log(r_max, eta) + 1e-9)
    plan = []
    for s in range(s_max, -1, -1):
        n = math.ceil((s_max + 1) / (s + 1) * eta**s)
        for i in range(s + 1):
            plan.append((s, i, max(1, n // eta**i), max(1, round(r_max / eta ** (s - i)))))
    return plan


def _hyperband(spec: ExperimentSpec, trials: list[Trial], count: int) -> list[Suggestion]:
    """Successive halving in brackets: rung 0 samples randomly, later rungs promote the best of the rung before."""
    resource = spec.settings.get("resource", "epochs")
    out: list[Suggestion] = []
    index = len(trials)
    for bracket, rung, size, budget in hyperband_plan(spec):
        members = [t for t in trials if t.meta.get("bracket") == bracket and t.meta.get("rung") == rung]
        missing = size - len(members)
        if missing <= 0:
            continue
        if rung == 0:
            sources: list[dict[str, Any]] = []
            for _ in range(min(missing, count - len(out))):
                rng = np.random.default_rng([spec.seed, index])
                sources.append({p.name: sample(p, rng) for p in spec.parameters})
                index += 1
        else:
            below = [t for t in trials if t.meta.get("bracket") == bracket and t.meta.get("rung") == rung - 1]
            if any(not t.finished for t in below):
                return out  # this rung waits for the one below
            scored = sorted(
                (t for t in below if t.scored),
                key=lambda t: t.value,  # type: ignore[arg-type,return-value]  # a scored trial has a value
                reverse=spec.objective.type == "maximize",
            )
            promoted = {t.meta.get("parent") for t in members}
            chosen = [t for t in scored[:size] if t.id not in promoted][: count - len(out)]
            sources, parents = [t.params for t in chosen], [t.id for t in chosen]
        for n, params in enumerate(sources):
            meta = {"bracket": bracket, "rung": rung, "parent": parents[n] if rung else None}
            out.append(Suggestion({**params, resource: budget}, meta))
        return out  # the next rung needs this one finished (and the next bracket waits for this one)
    return out
