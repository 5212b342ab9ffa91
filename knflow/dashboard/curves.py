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

from functions.tuning.experiment import EARLY_STOPPED, load_experiment
from infra.errors import NotFound, Unavailable
from infra.guard import access
from infra.http import json_response
from infra.store import ArtifactStore

if TYPE_CHECKING:
    from knflow.dashboard.server import Dashboard

log = logging.getLogger(__name__)
RUNNING = "Running"
METRICS_FILE = "metrics.jsonl"
READ_TIMEOUT_S = 5.0


def run_curves(store: ArtifactStore, runid: str) -> dict[str, Any]:
    """Every training of the run (the run's own, or its trials') with its per-epoch metrics, in trial order."""
    prefix = f"runs/{runid}/"
    series = []
    for info in store.list(prefix):
        rest = info.key[len(prefix) :]
        if rest == METRICS_FILE:
            series.append(_series(store, prefix, None))
        elif rest.startswith("trials/") and rest.endswith("/" + METRICS_FILE) and rest.count("/") == 2:
            series.append(_series(store, f"{prefix}trials/{rest.split('/')[1]}/", rest.split("/")[1]))
    series.sort(key=lambda s: s["trial"] or "")
    experiment = load_experiment(store, runid)
    objective, best = None, None
    if experiment is not None:
        objective = {"metric": experiment.spec.objective.metric, "type": experiment.spec.objective.type}
        best = experiment.best
    return {"runid": runid, "objective": objective, "best": best, "series": series}


def _series(store: ArtifactStore, prefix: str, trial: str | None) -> dict[str, Any]:
    """One training's epochs as columns (``epoch``, ``train_loss``, ``val_loss``, ``val_accuracy`` …)."""
    epochs = _epochs(store.get(prefix + METRICS_FILE))
    names = sorted({k for e in epochs for k in e if k != "epoch"})
    columns = {"epoch": [e.get("epoch") for e in epochs], **{n: [e.get(n) for e in epochs] for n in names}}
    status = RUNNING  # until the result is written, last
    with contextlib.suppress(NotFound):
        status = json.loads(store.get(prefix + "result.json")).get("status", RUNNING)
    return {"trial": trial, "status": status, "early_stopped": status == EARLY_STOPPED, "metrics": columns}


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

    @access("viewer")
    async def curves(request: web.Request) -> web.Response:
        runid = request.match_info["runid"]
        await dashboard.history.refresh()
        store = dashboard.artifact_store()
        try:
            body = await asyncio.wait_for(asyncio.to_thread(run_curves, store, runid), READ_TIMEOUT_S)
        except TimeoutError:
            raise Unavailable(f"artifact store {store.url} did not answer within {READ_TIMEOUT_S:.0f} s") from None
        except OSError as exc:
            raise Unavailable(f"artifact store {store.url} cannot be read: {exc}") from None
        if runid not in dashboard.history.runs and not body["series"]:
            raise NotFound(f"no run {runid!r} in the broker history")
        return json_response(body)

    app.router.add_get("/api/runs/{runid}/curves", curves)
