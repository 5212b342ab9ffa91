"""Runs and trials side by side: ``GET /api/compare?runs=A,B[,...]`` (an item is a run id or ``RUNID/TRIAL``).

Each item's parameters, metrics, data version and model come from its run's events in the broker history; ``differs``
names every ``params.``/``metrics.``/``data.`` key whose values are not all equal (absent from an item counts as
different). A run's parameters and metrics are those of the model it trained (tune's best trial when it tuned), with
the registered model's metrics over them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web
from cloudevents.core.v1.event import CloudEvent

from functions.contract import DATA_ARRIVED, DATASET_INGESTED, MODEL_REGISTERED, MODEL_TRAINED, TUNE_COMPLETED
from infra.errors import InvalidRequest, NotFound
from infra.guard import access
from infra.http import json_response
from infra.namespaces import addressed
from knflow.dashboard import runs

if TYPE_CHECKING:
    from knflow.dashboard.server import Dashboard

MAX_ITEMS = 20
SECTIONS = ("params", "metrics", "data")


def add_routes(app: web.Application, dashboard: Dashboard) -> None:
    """Register ``GET /api/compare`` on the knflow server's app."""
    app.router.add_get("/api/compare", CompareApi(dashboard).compare)


class CompareApi:
    """The comparison handler over the knflow server's event history."""

    def __init__(self, dashboard: Dashboard):
        self.dashboard = dashboard

    @access("viewer")
    async def compare(self, request: web.Request) -> web.Response:
        addressed(request)  # a namespace the caller does not act for is 404 before anything is read
        wanted = parse_items(request.query.get("runs"))
        await self.dashboard.history.refresh()
        items = []
        for runid, trial in wanted:
            events = self.dashboard.run_events(request, runid)  # another namespace's run: 404
            items.append(run_item(runid, events) if trial is None else trial_item(runid, trial, events))
        return json_response({"items": items, "differs": differs(items)})


def parse_items(text: str | None) -> list[tuple[str, str | None]]:
    """``A,B/trial-0001,...`` as (runid, trial or None) pairs; ``InvalidRequest`` naming what is wrong with the list."""
    if not text:
        raise InvalidRequest("compare needs runs=RUN,RUN[,...] (run ids, or RUNID/TRIAL for single trials)")
    names = [name.strip() for name in text.split(",")]
    if any(not name for name in names):
        raise InvalidRequest(f"runs={text!r} has an empty item")
    if not 2 <= len(names) <= MAX_ITEMS:
        raise InvalidRequest(f"compare takes 2 to {MAX_ITEMS} runs or trials, not {len(names)}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidRequest(f"{repeated[0]!r} is listed more than once")
    pairs: list[tuple[str, str | None]] = []
    for name in names:
        runid, slash, trial = name.partition("/")
        if not runid or (slash and (not trial or "/" in trial)):
            raise InvalidRequest(f"{name!r} is neither a run id nor RUNID/TRIAL")
        pairs.append((runid, trial if slash else None))
    return pairs


def _data(event: CloudEvent) -> dict[str, Any]:
    data = event.get_data()
    return data if isinstance(data, dict) else {}


def _last(events: Sequence[CloudEvent], kind: str) -> dict[str, Any] | None:
    found = [e for e in events if e.get_type() == kind]
    return _data(found[-1]) if found else None


def _base(runid: str, trial: str | None, events: Sequence[CloudEvent]) -> dict[str, Any]:
    """What a run and its trials share: ids, experiment, data set and data version, trial count."""
    arrived, ingested = _last(events, DATA_ARRIVED) or {}, _last(events, DATASET_INGESTED) or {}
    dataset = str(ingested.get("dataset") or arrived.get("dataset") or "")
    data = {
        "dataset": dataset,
        "key": arrived.get("key"),
        "version": ingested.get("version"),
        "rows": ingested.get("rows"),
    }
    return {
        "id": runid if trial is None else f"{runid}/{trial}",
        "runid": runid,
        "trial": trial,
        "experiment": runs.experiment_of(events) or dataset,
        "dataset": dataset,
        "status": runs.run_status(events),
        "params": {},
        "metrics": {},
        "data": {name: value for name, value in data.items() if value is not None},
        "model": None,
        "trials": len(runs.trials(events)),
    }


def _model_of(registered: dict[str, Any] | None) -> dict[str, Any] | None:
    return {"name": registered.get("name"), "version": registered.get("version")} if registered else None


def run_item(runid: str, events: Sequence[CloudEvent]) -> dict[str, Any]:
    """A run's column: its best trial's (or its one training's) parameters and metrics, the registered model's over."""
    item = _base(runid, None, events)
    completed, registered = _last(events, TUNE_COMPLETED), _last(events, MODEL_REGISTERED)
    trained = [_data(e) for e in events if runs.is_model(e)]
    model = (completed or {}).get("model") or (trained[-1] if trained else {})
    item["params"] = {**(model.get("params") or {}), **((completed or {}).get("params") or {})}
    item["metrics"] = {**(model.get("metrics") or {}), **((registered or {}).get("metrics") or {})}
    item["model"] = _model_of(registered)
    return item


def trial_item(runid: str, trial: str, events: Sequence[CloudEvent]) -> dict[str, Any]:
    """One trial's column: its parameters and metrics as train reported them (its request's while it runs)."""
    row = next((t for t in runs.trials(events) if t.get("trial") == trial), None)
    if row is None:
        raise NotFound(f"run {runid!r} has no trial {trial!r}")
    item = _base(runid, trial, events)
    results = [_data(e) for e in events if e.get_type() == MODEL_TRAINED and _data(e).get("trial") == trial]
    result = results[-1] if results else {}
    item["status"] = result.get("status") or row.get("status")
    item["params"] = {**(result.get("params") or {}), **(row.get("params") or {})}
    item["metrics"] = dict(result.get("metrics") or {})
    completed = _last(events, TUNE_COMPLETED) or {}
    if completed.get("best_trial") == trial:
        item["model"] = _model_of(_last(events, MODEL_REGISTERED))
    return item


def differs(items: Sequence[dict[str, Any]]) -> list[str]:
    """The ``section.name`` keys whose values are not all equal across ``items`` (absent counts as different)."""
    out = []
    for section in SECTIONS:
        names = sorted({name for item in items for name in item[section]})
        for name in names:
            values = [item[section].get(name, _ABSENT) for item in items]
            if any(value is _ABSENT or value != values[0] for value in values):
                out.append(f"{section}.{name}")
    return out


_ABSENT = object()
