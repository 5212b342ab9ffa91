"""A run's training curves: the per-epoch metrics train streams to ``metrics.jsonl``, one series per trial.

``GET /api/runs/{runid}/curves`` reads ``runs/<runid>/metrics.jsonl`` (a plain training) and
``runs/<runid>/trials/<trial>/metrics.jsonl`` (a tuning experiment's trials) from the artifact store, with each
trial's status from its ``result.json`` once written (``Running`` before) and the experiment's objective from
``experiment.json``. The page polls it, so the curves grow while the run trains.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from eventing.events import namespace_of
from functions.tuning.experiment import EARLY_STOPPED, load_experiment
from infra.errors import NotFound, Unavailable
from infra.guard import access
from infra.http import json_response
from infra.namespaces import addressed, scoped
from infra.store import ArtifactStore

if TYPE_CHECKING:
    from knflow.dashboard.server import Dashboard

log = logging.getLogger(__name__)
RUNNING = "Running"
METRICS_FILE = "metrics.jsonl"
READ_TIMEOUT_S = 5.0
FINISHED_KEPT = 10_000  # finished trainings' series kept in memory


class CurveReader:
    """Reads runs' curves from one store; a finished training's series (its result.json written, after which its
    metrics.jsonl does not change) is read once and kept, so polling a run reads only what still trains."""

    def __init__(self, store: ArtifactStore, keep: int = FINISHED_KEPT):
        self.store = store
        self.keep = keep
        self.finished: dict[str, dict[str, Any]] = {}  # training prefix -> its series

    def run_curves(self, runid: str) -> dict[str, Any]:
        """Every training of the run (the run's own, or its trials') with its per-epoch metrics, in trial order."""
        prefix = f"runs/{runid}/"
        keys = {info.key for info in self.store.list(prefix)}
        trainings: list[tuple[str, str | None]] = [(prefix, None)] if prefix + METRICS_FILE in keys else []
        for key in sorted(keys):
            rest = key[len(prefix) :].split("/")
            if len(rest) == 3 and rest[0] == "trials" and rest[2] == METRICS_FILE:
                trainings.append((f"{prefix}trials/{rest[1]}/", rest[1]))
        series = [self._series(where, trial, where + "result.json" in keys) for where, trial in trainings]
        experiment = load_experiment(self.store, runid)
        objective, best = None, None
        if experiment is not None:
            objective = {"metric": experiment.spec.objective.metric, "type": experiment.spec.objective.type}
            best = experiment.best
        return {"runid": runid, "objective": objective, "best": best, "series": series}

    def _series(self, prefix: str, trial: str | None, done: bool) -> dict[str, Any]:
        """One training's epochs as columns (``epoch``, ``train_loss``, ``val_loss``, ``val_accuracy`` …)."""
        if prefix in self.finished:
            return self.finished[prefix]
        epochs = _epochs(self.store.get(prefix + METRICS_FILE))
        names = sorted({k for e in epochs for k in e if k != "epoch"})
        columns = {"epoch": [e.get("epoch") for e in epochs], **{n: [e.get(n) for e in epochs] for n in names}}
        status = RUNNING  # until the result is written, last
        if done:
            with contextlib.suppress(NotFound):
                status = json.loads(self.store.get(prefix + "result.json")).get("status", RUNNING)
        found = {"trial": trial, "status": status, "early_stopped": status == EARLY_STOPPED, "metrics": columns}
        if status != RUNNING:
            if len(self.finished) >= self.keep:
                self.finished.clear()  # many runs looked at: start the memory afresh
            self.finished[prefix] = found
        return found


def _epochs(raw: bytes) -> list[dict[str, Any]]:
    """The JSON objects of a metrics.jsonl (a line that is not one, e.g. from a user's own training, is skipped)."""
    epochs = []
    for line in raw.decode("utf-8", "replace").splitlines():
        try:
            epoch = json.loads(line)
        except ValueError:
            continue
        if isinstance(epoch, dict):
            epochs.append(epoch)
    return epochs


def add_routes(app: web.Application, dashboard: Dashboard) -> None:
    """Register ``GET /api/runs/{runid}/curves`` on the knflow server's app."""
    app.router.add_get("/api/runs/{runid}/curves", CurvesApi(dashboard).curves)


class CurvesApi:
    """The curves handler over the knflow server's history and artifact store (opened on first use)."""

    def __init__(self, dashboard: Dashboard):
        self.dashboard = dashboard
        self.readers: dict[str, CurveReader] = {}  # per namespace: each reads under its prefix

    @access("viewer")
    async def curves(self, request: web.Request) -> web.Response:
        runid, namespace = request.match_info["runid"], addressed(request)
        await self.dashboard.history.refresh()
        known = self.dashboard.history.runs.get(runid)
        if known and namespace_of(known[0]) != namespace:
            raise NotFound(f"no run {runid!r} in the broker history")
        store = self.dashboard.artifact_store()
        if namespace not in self.readers:
            self.readers[namespace] = CurveReader(scoped(store, namespace))
        reader = self.readers[namespace]
        try:
            body = await asyncio.wait_for(asyncio.to_thread(reader.run_curves, runid), READ_TIMEOUT_S)
        except TimeoutError:
            raise Unavailable(f"artifact store {store.url} did not answer within {READ_TIMEOUT_S:.0f} s") from None
        except OSError as exc:
            raise Unavailable(f"artifact store {store.url} cannot be read: {exc}") from None
        if runid not in self.dashboard.history.runs and not body["series"]:
            raise NotFound(f"no run {runid!r} in the broker history")
        return json_response(body)
