"""Tune (Katib's job): on features.ready of a tuning run, request trials; on each trial's model.trained,
record it, request the next ones up to parallelTrialCount, and after maxTrialCount (or the goal) announce
the best as tune.completed.

Tune is stateless: everything lives in ``runs/<runid>/experiment.json`` and is written before any event is emitted,
so a redelivered or duplicate event changes nothing (results are keyed by trial id) and a restarted tune resumes.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from cloudevents.core.v1.event import CloudEvent

from eventing.events import PARTITIONKEY, STEP_FAILED, new_event, runid_of
from functions.contract import FEATURES_READY, MODEL_TRAINED, TRIAL_REQUESTED, TUNE_COMPLETED, data_of
from functions.runoptions import load_options
from functions.tuning.experiment import (
    DONE,
    EARLY_STOPPED,
    FAILED,
    REQUESTED,
    SUCCEEDED,
    Experiment,
    Trial,
    trial_id,
    update_experiment,
)
from functions.tuning.search import suggest
from infra.errors import InvalidRequest
from infra.store import ArtifactStore

SOURCE = "/knflow/functions/tune"
MODE = "mode"  # extension: features.ready "tune" is ours; model.trained "trial" is a trial result
_locks: dict[str, asyncio.Lock] = {}


async def handle(event: CloudEvent, ctx: Any) -> CloudEvent | None:
    """features.ready (mode tune) → N trial.requested; model.trained (mode trial) or step.failed of a trial
    request → more trials or tune.completed."""
    runid = runid_of(event)
    if not runid:
        raise InvalidRequest("tune needs events that carry a runid")
    data = data_of(event)
    async with _run_lock(runid):  # one replica serializes a run; across replicas experiment.json is compare-and-swap
        if event.get_type() == FEATURES_READY and event.get_extension(MODE) == "tune":
            spec_raw = load_options(ctx.store, runid).tuning
            if not spec_raw:
                raise InvalidRequest(f"run {runid} asks for tuning but its options hold no tuning spec")
            emits, reply = await asyncio.to_thread(start_experiment, ctx.store, runid, spec_raw, data)
        elif event.get_type() == MODEL_TRAINED and data.get("trial"):
            emits, reply = await asyncio.to_thread(record, ctx.store, runid, data, event.get_id())
        elif event.get_type() == STEP_FAILED and (failed := failed_trial(runid, data)):
            emits, reply = await asyncio.to_thread(record, ctx.store, runid, failed, event.get_id())
        else:
            return None
    for data in emits:
        # the id names the trial, so a dead-lettered request (step.failed carries its event_id) maps back to it;
        # the trial is its own partition key, so the trials of one run are delivered (and trained) in parallel
        ext = {MODE: "trial", "id": trial_event_id(runid, data["trial"]), PARTITIONKEY: trial_key(runid, data["trial"])}
        await ctx.emit(new_event(TRIAL_REQUESTED, SOURCE, data, cause=event, subject=data["trial"], extensions=ext))
    if reply is None:
        return None
    return new_event(TUNE_COMPLETED, SOURCE, reply, cause=event, subject=reply["best_trial"])


def trial_key(runid: str, trial: str) -> str:
    """The partition key of a trial's request: its own, so trials run in parallel up to parallelTrialCount."""
    return f"{runid}/{trial}"


def trial_event_id(runid: str, trial: str) -> str:
    """The CloudEvent id of a trial's request: one per (run, trial), the same when it is requested again."""
    return f"{runid}.{trial}"


def failed_trial(runid: str, failure: dict[str, Any]) -> dict[str, Any] | None:
    """A Failed trial result from a step.failed event about one of this run's trial requests, else None."""
    prefix = f"{runid}."
    event_id = str(failure.get("event_id", ""))
    if failure.get("event_type") != TRIAL_REQUESTED or not event_id.startswith(prefix):
        return None
    reason = f"delivery to {failure.get('subscriber')} failed: {failure.get('error')}"
    return {"trial": event_id[len(prefix) :], "status": FAILED, "reason": reason, "metrics": {}, "curve": []}


@asynccontextmanager
async def _run_lock(runid: str) -> AsyncIterator[None]:
    """Serialize one run's events in this process; the lock is dropped when nobody holds or waits for it."""
    lock = _locks.setdefault(runid, asyncio.Lock())
    try:
        async with lock:
            yield
    finally:
        if not lock.locked() and _locks.get(runid) is lock:
            del _locks[runid]


def start_experiment(
    store: ArtifactStore, runid: str, spec_raw: dict, features: dict
) -> tuple[list[dict], dict | None]:
    """Create the experiment and its first trials; on a redelivery, re-request the trials still pending."""

    def create(existing: Experiment | None) -> Experiment | None:
        if existing is not None:
            return None
        experiment = Experiment(runid, spec_raw, features)
        experiment.spec  # noqa: B018 - parse now so a bad spec fails before anything is stored
        fill(experiment)
        return experiment

    experiment = update_experiment(store, runid, create)
    assert experiment is not None
    if experiment.status == DONE:
        return [], completed_data(experiment)
    pending = [t for t in experiment.ordered() if t.status == REQUESTED]
    return [request_data(experiment, t) for t in pending], None


def record(
    store: ArtifactStore, runid: str, result: dict, event_id: str | None = None
) -> tuple[list[dict], dict | None]:
    """Record one trial's result (once per trial id), then request more trials or finish the experiment.

    Trials of one run finish in parallel (each is its own partition key) and tune may run as several
    replicas, so the update is a compare-and-swap that is re-applied when another one wrote first.

    The event ``event_id`` delivered again (tune went down after storing its result, before its answer got out)
    answers again what its recording answered: the trials it requested, tune.completed, or the experiment's failure.
    Another duplicate of a finished trial's result (train announcing a stored result again) changes nothing.
    """
    outcome: dict[str, Any] = {}

    def apply(experiment: Experiment | None) -> Experiment | None:
        outcome.clear()
        trial = experiment.trials.get(result["trial"]) if experiment else None
        if experiment is None or trial is None:
            return None  # unknown: nothing changes
        if trial.finished or experiment.status != "Running":
            if event_id is not None and trial.recorded_from == event_id:
                outcome["again"] = trial.id
            return None  # a duplicate or a late result: nothing changes
        experiment.trials[trial.id] = dataclasses.replace(
            finished_trial(experiment, trial, result), recorded_from=event_id
        )
        failed = experiment.count(FAILED)
        if failed > experiment.spec.max_failed_trials:
            reason = f"{failed} trials failed (maxFailedTrialCount {experiment.spec.max_failed_trials})"
            experiment.status, experiment.reason = "Failed", reason
            outcome["failed"] = True
            return experiment
        new = fill(experiment, requested_by=trial.id)
        finish_if_done(experiment)
        outcome["emits"] = [request_data(experiment, t) for t in new]
        outcome["reply"] = completed_data(experiment) if experiment.status == DONE else None
        return experiment

    experiment = update_experiment(store, runid, apply)
    if "again" in outcome and experiment is not None:
        return answered_again(experiment, outcome["again"])
    if "failed" in outcome and experiment is not None:
        raise InvalidRequest(f"experiment {runid} failed: {experiment.reason}")
    return outcome.get("emits", []), outcome.get("reply")


def answered_again(experiment: Experiment, trial: str) -> tuple[list[dict], dict | None]:
    """What recording ``trial``'s result answered, for that result delivered again: the trials it requested (those
    still pending), tune.completed, or the experiment's failure."""
    if experiment.status == "Failed":
        raise InvalidRequest(f"experiment {experiment.runid} failed: {experiment.reason}")
    if experiment.status == DONE:
        return [], completed_data(experiment)
    asked = [t for t in experiment.ordered() if t.status == REQUESTED and t.requested_by == trial]
    return [request_data(experiment, t) for t in asked], None


def finished_trial(experiment: Experiment, trial: Trial, result: dict) -> Trial:
    """The trial with its reported status, objective value and learning curve."""
    metric = experiment.spec.objective.metric
    status = result.get("status", SUCCEEDED)
    value = (result.get("metrics") or {}).get(metric)
    if status not in (SUCCEEDED, EARLY_STOPPED, FAILED) or (status != FAILED and value is None):
        status, value = FAILED, None
    curve = tuple(float(v) for v in result.get("curve", ()))
    return dataclasses.replace(
        trial, status=status, value=None if value is None else float(value), curve=curve, result=result
    )


def fill(experiment: Experiment, requested_by: str | None = None) -> list[Trial]:
    """Request new trials up to parallelTrialCount running and maxTrialCount in all (stops once the goal is reached);
    ``requested_by`` is the trial whose result makes room for them."""
    spec = experiment.spec
    best = experiment.best_trial()
    if best is not None and spec.objective.reached(best.value):  # type: ignore[arg-type]  # best is scored
        return []
    slots = min(spec.parallel_trials - experiment.count(REQUESTED), spec.max_trials - len(experiment.trials))
    new = []
    for suggestion in suggest(spec, experiment.ordered(), slots):
        index = len(experiment.trials)
        trial = Trial(trial_id(index), index, suggestion.params, meta=suggestion.meta, requested_by=requested_by)
        experiment.trials[trial.id] = trial
        new.append(trial)
    return new


def finish_if_done(experiment: Experiment) -> None:
    """Done when nothing runs and nothing more will be requested (budget spent, goal reached, search exhausted)."""
    if experiment.count(REQUESTED) > 0:
        return
    best = experiment.best_trial()
    if best is None:
        experiment.status, experiment.reason = "Failed", "no trial produced an objective value"
        return
    goal = experiment.spec.objective.reached(best.value)  # type: ignore[arg-type]  # the best trial is a scored one
    experiment.status, experiment.best = DONE, best.id
    experiment.reason = (
        "goal reached"
        if goal
        else "trial budget spent"
        if len(experiment.trials) >= experiment.spec.max_trials
        else "search space exhausted"
    )


def request_data(experiment: Experiment, trial: Trial) -> dict[str, Any]:
    """The data of a trial.requested event."""
    spec = experiment.spec
    es = spec.early_stopping
    return {
        "experiment": experiment.runid,
        "trial": trial.id,
        "params": trial.params,
        "features": experiment.features,
        "objective": {"metric": spec.objective.metric, "type": spec.objective.type},
        "early_stopping": dataclasses.asdict(es) if es else None,
    }


def completed_data(experiment: Experiment) -> dict[str, Any]:
    """The data of tune.completed: the best trial, its model (its model.trained data) and every trial's outcome."""
    assert experiment.best is not None, "a completed experiment names its best trial"
    best = experiment.trials[experiment.best]
    return {
        "experiment": experiment.runid,
        "best_trial": best.id,
        "objective": {
            "metric": experiment.spec.objective.metric,
            "type": experiment.spec.objective.type,
            "value": best.value,
        },
        "params": best.params,
        "reason": experiment.reason,
        "model": best.result,
        "trials": [
            {"trial": t.id, "status": t.status, "value": t.value, "params": t.params} for t in experiment.ordered()
        ],
    }
