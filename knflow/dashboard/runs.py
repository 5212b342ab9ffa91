"""Runs read from the event history: status, current step, per-step durations, trials, failures.

Pure functions over a run's events in log order (``cloudevents`` SDK events); no I/O. The steps, their order and
what each takes come from the run's pipeline spec (``PipelineView``): a step's row starts at the first event one
of its triggers takes and ends at its result, the last type it ``emits``. Tuning trials (events with ``mode:
trial``) are the tuning loop's own traffic: the trials table shows them, the step rows do not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from cloudevents.core.v1.event import CloudEvent

from eventing.events import STEP_FAILED
from eventing.filters import matches
from eventing.sources.ping import PING_TYPE
from functions.contract import (
    DATA_ARRIVED,
    DATASET_INGESTED,
    FEATURES_READY,
    INFERENCE_TYPES,
    MODEL_DEPLOYED,
    MODEL_REGISTERED,
    MODEL_TRAINED,
    TRIAL_REQUESTED,
    TUNE_COMPLETED,
    lifecycle_spec_path,
)
from functions.runtime.pipeline import PipelineSpec, Step, load_pipeline

REPLAY_OF = "knflowreplayof"
RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"
DONE = "done"

#: Fields worth a glance on the timeline, per event type (others fall back to the scalar fields).
KEY_FIELDS = {
    DATA_ARRIVED: ("dataset", "key", "size"),
    DATASET_INGESTED: ("dataset", "experiment", "rows", "task", "num_classes", "kind"),
    FEATURES_READY: ("dataset", "rows", "input_shape", "task", "num_classes"),
    TRIAL_REQUESTED: ("trial", "params"),
    MODEL_TRAINED: ("trial", "status", "reason", "model_name", "metrics"),
    TUNE_COMPLETED: ("best_trial", "objective", "reason"),
    MODEL_REGISTERED: ("name", "version", "sha256", "metrics"),
    MODEL_DEPLOYED: ("name", "version", "revision", "traffic_percent", "canary", "decision"),
    STEP_FAILED: ("trigger", "event_type", "status", "error", "attempts"),
}
_METRICS_SHOWN = ("test_accuracy", "val_accuracy", "test_rmse", "test_r2", "val_rmse", "test_loss")


@dataclass(frozen=True)
class RunSummary:
    """One row of the runs table."""

    runid: str
    dataset: str
    experiment: str
    key: str
    step: str
    status: str
    started: str
    updated: str
    duration_s: float
    events: int
    model: str


@dataclass(frozen=True)
class StepRow:
    """One lifecycle step of a run: when its input arrived, when it answered, how it ended."""

    step: str
    status: str
    started: str
    ended: str | None
    duration_s: float | None


def _data(event: CloudEvent) -> dict:
    data = event.get_data()
    return data if isinstance(data, dict) else {}


def _time(event: CloudEvent) -> datetime:
    return event.get_time() or datetime.fromtimestamp(0, UTC)


def _iso(when: datetime | None) -> str | None:
    return when.isoformat().replace("+00:00", "Z") if when else None


def is_fatal(event: CloudEvent) -> bool:
    """A failure that stops the run: a step.failed (except a trial's, which tune absorbs) or a failed training."""
    if event.get_type() == STEP_FAILED:
        return _data(event).get("event_type") != TRIAL_REQUESTED
    return _trained(event) and _data(event).get("status") == "Failed"


def run_status(events: Sequence[CloudEvent]) -> str:
    """Succeeded once registered/deployed, failed after a fatal failure; the last of those decides."""
    status = RUNNING
    for event in events:
        if event.get_type() in (MODEL_REGISTERED, MODEL_DEPLOYED):
            status = SUCCEEDED
        elif is_fatal(event):
            status = FAILED
        elif status == FAILED and event.get_extension(REPLAY_OF):
            status = RUNNING  # a replayed event gives the run another go
    return status


def current_step(events: Sequence[CloudEvent], status: str, view: PipelineView | None = None) -> str:
    """The step a running run waits on (the first step taking its last event), the step that failed, or done."""
    view = view or PipelineView.lifecycle()
    if status == FAILED:
        failure = next(e for e in reversed(events) if is_fatal(e))
        return failed_step(events, failure, view)
    progress = [e for e in events if e.get_type() not in _NOT_PROGRESS]
    if not progress:
        return "?"
    if progress[-1].get_type() == PING_TYPE:
        return "schedule"  # a schedule's tick: the schedule function turns it into the run's data arrival
    takers = view.takers(progress[-1])
    return takers[0] if takers else DONE


def elapsed(started_iso: str, now: datetime) -> float:
    """Seconds from an ISO time (as RunSummary holds it) to ``now``."""
    started = datetime.fromisoformat(started_iso.replace("Z", "+00:00"))
    return round(max((now - started).total_seconds(), 0.0), 3)


def summarize(
    runid: str, events: Sequence[CloudEvent], now: datetime | None = None, view: PipelineView | None = None
) -> RunSummary:
    """The runs-table row of one run (``events`` in log order, at least one)."""
    status = run_status(events)
    started, updated = _time(events[0]), _time(events[-1])
    end = updated if status != RUNNING else (now or datetime.now(UTC))
    dataset = next((str(_data(e)["dataset"]) for e in events if _data(e).get("dataset")), "")
    experiment = experiment_of(events) or dataset
    key = next((str(_data(e).get("key", "")) for e in events if e.get_type() == DATA_ARRIVED), "")
    registered = [_data(e) for e in events if e.get_type() in (MODEL_REGISTERED, MODEL_DEPLOYED)]
    model = f"{registered[-1].get('name')} v{registered[-1].get('version')}" if registered else ""
    return RunSummary(
        runid=runid,
        dataset=dataset,
        experiment=experiment,
        key=key,
        step=current_step(events, status, view),
        status=status,
        started=_iso(started) or "",
        updated=_iso(updated) or "",
        duration_s=round(max((end - started).total_seconds(), 0.0), 3),
        events=len(events),
        model=model,
    )


def experiment_of(events: Sequence[CloudEvent]) -> str | None:
    """The experiment a run's events name (ingest's answer, else the submitted options); None: the data set's."""
    for e in events:
        if e.get_type() == DATASET_INGESTED and _data(e).get("experiment"):
            return str(_data(e)["experiment"])
    for e in events:
        options = _data(e).get("options") if e.get_type() == DATA_ARRIVED else None
        if isinstance(options, dict) and isinstance(options.get("experiment"), str) and options["experiment"]:
            return options["experiment"]
    return None


def select(rows: Sequence[RunSummary], **wanted: str | None) -> list[RunSummary]:
    """The rows whose fields equal every given value (``dataset=``, ``experiment=``, ``status=``; None: any)."""
    given = {name: value for name, value in wanted.items() if value}
    return [row for row in rows if all(getattr(row, name) == value for name, value in given.items())]


def key_fields(event: CloudEvent) -> dict[str, Any]:
    """The few data fields the timeline shows for an event (long values shortened)."""
    data = _data(event)
    names = KEY_FIELDS.get(event.get_type()) or [k for k, v in data.items() if isinstance(v, str | int | float)][:6]
    out: dict[str, Any] = {}
    for name in names:
        value = data.get(name)
        if value is None:
            continue
        if name == "metrics" and isinstance(value, dict):
            value = {k: value[k] for k in _METRICS_SHOWN if k in value}
        elif name in ("sha256", "version") and isinstance(value, str) and len(value) > 16:
            value = value[:12]
        elif isinstance(value, str) and len(value) > 300:
            value = value[:300] + "…"
        out[name] = value
    return out


def timeline(events: Sequence[CloudEvent]) -> list[dict[str, Any]]:
    """Every event of the run: type, time, source, id, subject, mode, key data fields."""
    return [
        {
            "type": e.get_type(),
            "id": e.get_id(),
            "time": _iso(e.get_time()),
            "source": e.get_source(),
            "subject": e.get_subject(),
            "mode": e.get_extension("mode"),
            "replay_of": e.get_extension(REPLAY_OF),
            "fields": key_fields(e),
        }
        for e in events
    ]


def _first(events: Sequence[CloudEvent], test: Any, after: datetime | None = None) -> CloudEvent | None:
    return next((e for e in events if test(e) and (after is None or _time(e) >= after)), None)


def is_model(e: CloudEvent) -> bool:
    """A training answer that is the run's model (not a tuning trial's, not a failed training)."""
    return _trained(e) and _data(e).get("status") != "Failed"


def _trained(e: CloudEvent) -> bool:
    return e.get_type() == MODEL_TRAINED and e.get_extension("mode") != "trial" and not _data(e).get("trial")


#: Failure reports and a deployed model's logged traffic: a run's own events that no step row starts from.
_NOT_PROGRESS = frozenset({STEP_FAILED, *INFERENCE_TYPES})


def _trial(e: CloudEvent) -> bool:
    return e.get_extension("mode") == "trial"


class PipelineView:
    """A pipeline spec as the run views read it: each step's inputs and its result, in the spec's order."""

    def __init__(self, spec: PipelineSpec):
        self.spec = spec

    @classmethod
    def lifecycle(cls) -> PipelineView:
        return _LIFECYCLE

    def takes(self, step: Step, e: CloudEvent) -> bool:
        """Whether one of the step's triggers takes ``e`` as progress of the run: tuning trials and failure
        reports (step.failed, a result whose data says ``status: Failed``) aside; the trials table and the
        failures panel show those."""
        if _trial(e) or e.get_type() in _NOT_PROGRESS or _data(e).get("status") == "Failed":
            return False
        return any(matches(e, t.filter, t.filters) for t in step.triggers)

    def takers(self, e: CloudEvent) -> list[str]:
        """The steps any trigger of which takes ``e``, trials included (what a run waits on after ``e``)."""
        return [s.name for s in self.spec.steps if any(matches(e, t.filter, t.filters) for t in s.triggers)]

    @staticmethod
    def gives(step: Step, e: CloudEvent) -> bool:
        """Whether ``e`` is the step's result: the last type it emits, not a trial's, not a failed training."""
        if not step.emits or _trial(e) or e.get_type() != step.emits[-1]:
            return False
        return is_model(e) if e.get_type() == MODEL_TRAINED else True


def failed_step(events: Sequence[CloudEvent], failure: CloudEvent, view: PipelineView | None = None) -> str:
    """The step a fatal failure stopped: the one whose input could not be delivered (else its trigger's name)."""
    view = view or PipelineView.lifecycle()
    if failure.get_type() == MODEL_TRAINED:
        return next((s.name for s in view.spec.steps if MODEL_TRAINED in s.emits), "train")
    failed_id = _data(failure).get("event_id")
    original = next((e for e in events if e.get_id() == failed_id), None)
    for step in view.spec.steps:
        if original is not None and view.takes(step, original):
            return step.name
    return str(_data(failure).get("trigger") or "?")


def steps(events: Sequence[CloudEvent], now: datetime | None = None, view: PipelineView | None = None) -> list[StepRow]:
    """Per-step rows in the spec's order: input arrival to result; failed when the step's input was dead-lettered."""
    now, view = now or datetime.now(UTC), view or PipelineView.lifecycle()
    failures = [e for e in events if e.get_type() == STEP_FAILED and is_fatal(e)]
    rows = []
    for step in view.spec.steps:
        inputs = [e for e in events if view.takes(step, e)]
        if not inputs:
            continue
        start = inputs[0]
        out = next((e for e in events if view.gives(step, e) and _time(e) >= _time(start)), None)
        ids = {e.get_id() for e in inputs}
        failed = next((f for f in reversed(failures) if _data(f).get("event_id") in ids), None)
        if failed is not None and any(_time(e) > _time(failed) for e in inputs):
            failed = None  # its input came again (a replay) after the failure
        if out is None and MODEL_TRAINED in step.emits:
            failed = failed or next((e for e in events if _trained(e) and is_fatal(e)), None)
        if out is not None:
            status, end = SUCCEEDED, _time(out)
        elif failed is not None:
            status, end = FAILED, _time(failed)
        elif not step.emits and run_status(events) == SUCCEEDED:
            status, end = SUCCEEDED, _time(inputs[-1])  # it answers nothing: taken, and nothing failed
        else:
            status, end = RUNNING, None
        duration = ((end or now) - _time(start)).total_seconds()
        rows.append(StepRow(step.name, status, _iso(_time(start)) or "", _iso(end), round(max(duration, 0.0), 3)))
    return rows


_LIFECYCLE = PipelineView(load_pipeline(lifecycle_spec_path()))


def trials(events: Sequence[CloudEvent]) -> list[dict[str, Any]]:
    """Tuning trials: from tune.completed when the experiment finished, else from requests and results so far."""
    done = [e for e in events if e.get_type() == TUNE_COMPLETED]
    if done:
        return [
            {"trial": t.get("trial"), "params": t.get("params"), "status": t.get("status"), "value": t.get("value")}
            for t in _data(done[-1]).get("trials", [])
        ]
    rows: dict[str, dict[str, Any]] = {}
    metric = None
    for e in events:
        data = _data(e)
        if e.get_type() == TRIAL_REQUESTED and data.get("trial"):
            metric = (data.get("objective") or {}).get("metric", metric)
            rows[data["trial"]] = {"trial": data["trial"], "params": data.get("params"), "status": "Running"}
            rows[data["trial"]]["value"] = None
        elif e.get_type() == MODEL_TRAINED and data.get("trial") in rows:
            row = rows[data["trial"]]
            row["status"] = data.get("status", "Succeeded")
            row["value"] = (data.get("metrics") or {}).get(metric) if metric else None
            if data.get("reason"):
                row["reason"] = data["reason"]
        elif e.get_type() == STEP_FAILED and data.get("event_type") == TRIAL_REQUESTED:
            trial = str(data.get("event_id", "")).rsplit(".", 1)[-1]
            if trial in rows:
                rows[trial].update(status="Failed", reason=data.get("error"))
    return list(rows.values())


def registered_model(events: Sequence[CloudEvent]) -> dict[str, Any] | None:
    """The model the run registered: name, version, sha256, metrics, params and lineage; None before."""
    found = [_data(e) for e in events if e.get_type() == MODEL_REGISTERED]
    fields = ("name", "version", "sha256", "metrics", "params", "lineage")
    return {name: found[-1].get(name) for name in fields} if found else None


def failure_row(event: CloudEvent, replays: Sequence[CloudEvent] = ()) -> dict[str, Any]:
    """A dead-lettered delivery as the failures panel shows it (``replays``: events re-published from it)."""
    data = _data(event)
    return {
        "id": event.get_id(),
        "runid": event.get_extension("runid"),
        "time": _iso(event.get_time()),
        "event_id": data.get("event_id"),
        "event_type": data.get("event_type"),
        "trigger": data.get("trigger"),
        "subscriber": data.get("subscriber"),
        "status": data.get("status"),
        "error": data.get("error"),
        "attempts": data.get("attempts"),
        "dead_letter_sink": data.get("dead_letter_sink"),
        "replays": [{"id": r.get_id(), "time": _iso(r.get_time())} for r in replays],
    }


def failure_reason(events: Sequence[CloudEvent]) -> str | None:
    """Why the run stopped: the last fatal failure, in words."""
    fatal = [e for e in events if is_fatal(e)]
    if not fatal:
        return None
    data = _data(fatal[-1])
    if fatal[-1].get_type() == MODEL_TRAINED:
        return f"training failed: {data.get('reason') or 'no reason given'}"
    return (
        f"{data.get('trigger')} could not handle {data.get('event_type')} {data.get('event_id')} "
        f"after {data.get('attempts')} attempt(s): status {data.get('status')}: {data.get('error')}"
    )


def run_detail(
    runid: str, events: Sequence[CloudEvent], replays: dict[str, list[CloudEvent]], view: PipelineView | None = None
) -> dict[str, Any]:
    """Everything the run page shows."""
    failed = [e for e in events if e.get_type() == STEP_FAILED]
    failures = [failure_row(e, replays.get(_data(e).get("event_id", ""), [])) for e in failed]
    summary = summarize(runid, events, view=view)
    return {
        "run": asdict(summary),
        "pipeline": (view or PipelineView.lifecycle()).spec.name,
        "reason": failure_reason(events) if summary.status == FAILED else None,
        "steps": [asdict(s) for s in steps(events, view=view)],
        "trials": trials(events),
        "model": registered_model(events),
        "failures": failures,
        "timeline": timeline(events),
    }
