"""The dashboard over a run made by the real lifecycle steps (ingest, featurize, tune + train, register, deploy)."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from aiohttp import ClientSession
from cloudevents.core.v1.event import CloudEvent
from sklearn.datasets import load_digits

from eventing.broker import BrokerServer
from eventing.client import publish_async
from eventing.events import new_event
from functions.contract import DATA_ARRIVED, MODEL_TRAINED, TRIAL_REQUESTED, TUNE_COMPLETED
from infra.settings import Settings
from infra.store import ArtifactStore
from serving.gateway import Gateway
from tests.lifecycle.helpers import StepContext


def digits_npz() -> bytes:
    bunch = load_digits()
    buf = io.BytesIO()
    np.savez(buf, x=bunch.data.astype(np.float32), y=bunch.target)
    return buf.getvalue()


async def run_lifecycle(ctx: StepContext, publish) -> str:  # type: ignore[no-untyped-def]
    """Each step's answer goes into the broker, as the function host would send it."""
    from functions import deploy, featurize, ingest, register, train, tune

    spec = {"algorithm": "random", "maxTrialCount": 2, "parallelTrialCount": 2, "seed": 0,
            "objective": {"metric": "val_accuracy", "type": "maximize"},
            "parameters": [{"name": "lr", "type": "double", "min": 1e-3, "max": 1e-2, "log": True}]}  # fmt: skip
    options = {"model_name": "digits", "train": {"model": "mlp", "epochs": 1, "hidden": 32}, "tuning": spec}
    arrived = new_event(DATA_ARRIVED, "/tests", {"key": "raw/digits/d.npz", "size": 0, "options": options})
    await publish(arrived)
    ready = await asyncio.to_thread(
        featurize.handle, await publish(await asyncio.to_thread(ingest.handle, arrived, ctx)), ctx
    )
    await publish(ready)
    await tune.handle(ready, ctx)
    queue, completed = list(ctx.emitted), None
    while queue:
        event = await publish(queue.pop(0))
        ctx.emitted.clear()
        if event.get_type() == TRIAL_REQUESTED:
            queue.append(await asyncio.to_thread(train.handle, event, ctx))
        elif event.get_type() == MODEL_TRAINED:
            reply = await tune.handle(event, ctx)
            queue += ctx.emitted
            if reply is not None and reply.get_type() == TUNE_COMPLETED:
                completed = await publish(reply)
    registered = await publish(await asyncio.to_thread(register.handle, completed, ctx))
    await publish(await asyncio.to_thread(deploy.handle, registered, ctx))
    return arrived.get_extension("runid")


@pytest.mark.timeout(120)
async def test_a_real_tuned_run_reads_as_succeeded_with_its_trials_model_and_revision(
    settings: Settings,
    file_store: ArtifactStore,
    broker: BrokerServer,
    gateway: Gateway,
    start_dashboard,
    http: ClientSession,
) -> None:  # type: ignore[no-untyped-def]
    file_store.put("raw/digits/d.npz", digits_npz())
    ctx = StepContext(file_store, settings.replace(gateway_port=gateway.port))

    async def publish(event: CloudEvent) -> CloudEvent:
        await publish_async(broker.url, event)
        return event

    runid = await run_lifecycle(ctx, publish)
    dashboard = await start_dashboard(broker.url, f"http://127.0.0.1:{gateway.port}")
    async with http.get(f"{dashboard.url}/api/runs/{runid}") as response:
        detail = await response.json()
    assert detail["run"]["status"] == "succeeded" and detail["run"]["model"] == "digits v1", detail["run"]
    assert [(s["step"], s["status"]) for s in detail["steps"]] == [
        (step, "succeeded") for step in ("ingest", "featurize", "tune", "register", "deploy")
    ]
    trials = detail["trials"]
    assert len(trials) == 2 and all(t["status"] == "Succeeded" and 0 < t["value"] <= 1 for t in trials)
    async with http.get(f"{dashboard.url}/api/models/digits") as response:
        model = await response.json()
    version = model["versions"][0]
    assert version["aliases"] == ["production"] and version["lineage"]["run"] == runid
    assert 0 < version["metrics"]["test_accuracy"] <= 1
    async with http.get(f"{dashboard.url}/api/serving/digits") as response:
        served = await response.json()
    assert [(r["version"], r["percent"]) for r in served["revisions"]] == [(1, 100)]
