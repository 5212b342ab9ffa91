"""Dashboard fixtures: a real broker (embedded log), a real registry with a real ONNX model, a real gateway,
the dashboard in-process, and Debian's chromium driven by Playwright."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from bench.dashboard.lifecycle_events import start_of_run, tiny_onnx, tuned_run
from eventing.broker import BrokerServer
from eventing.client import publish_async
from eventing.events import STEP_FAILED, new_runid
from eventing.triggers import DeliverySpec, Trigger
from functions.contract import FEATURES_READY
from infra.settings import Settings, load_settings
from infra.store import ArtifactStore, open_store
from knflow.dashboard import Dashboard
from serving.gateway import Gateway
from serving.registry import ModelRegistry
from tests.eventually import eventually
from tests.unguarded import UNGUARDED
from tests.webapps import served

TRAIN_ERROR = "train crashed: CUDA error: out of memory (tried to allocate 2.00 GiB)"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        env={
            "KNFLOW_DATA_DIR": str(tmp_path),
            "KNFLOW_BROKER": f"embedded://{tmp_path / 'events'}",
            "KNFLOW_ARTIFACTS": f"file://{tmp_path / 'artifacts'}",
            **UNGUARDED,
        }
    )


@pytest.fixture
def file_store(settings: Settings) -> ArtifactStore:
    return open_store(settings.artifacts)


@pytest.fixture
def registry(file_store: ArtifactStore) -> ModelRegistry:
    return ModelRegistry(file_store)


@pytest.fixture
async def failing_train() -> AsyncIterator[str]:
    """A real subscriber that answers 500 with a reason, as a crashing train function would."""

    async def crash(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=500, text=TRAIN_ERROR)

    app = web.Application()
    app.router.add_post("/train", crash)
    async with served(app) as url:
        yield f"{url}/train"


@pytest.fixture
def failing_runid() -> str:
    return "run-failing0000001"


@pytest.fixture
async def broker(settings: Settings, failing_train: str, failing_runid: str) -> AsyncIterator[BrokerServer]:
    """The real broker; its trigger "train" delivers the failing run's features.ready to the crashing subscriber."""
    trigger = Trigger(
        "train",
        failing_train,
        filter={"type": FEATURES_READY, "runid": failing_runid},
        delivery=DeliverySpec(retry=1, backoff_delay=0.05),
    )
    async with BrokerServer(settings, [trigger], sources=[], port=0) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[ClientSession]:
    async with ClientSession() as session:
        yield session


@pytest.fixture
async def start_dashboard(settings: Settings, file_store: ArtifactStore):  # type: ignore[no-untyped-def]
    """Start dashboards in-process on free ports (stopped at teardown)."""
    started: list[Dashboard] = []

    async def start(broker_url: str, gateway_url: str, store: ArtifactStore | None = None) -> Dashboard:
        store = store or file_store
        dashboard = Dashboard(settings, broker_url=broker_url, gateway_url=gateway_url, store=store, port=0)
        started.append(await dashboard.start())
        return dashboard

    yield start
    for dashboard in started:
        await dashboard.stop()


@pytest.fixture
async def gateway(settings: Settings, file_store: ArtifactStore) -> AsyncIterator[Gateway]:
    """The real inference gateway over the same artifact store (replicas are real ONNX Runtime processes)."""
    gw = Gateway(settings, file_store)
    await gw.start(port=0, grpc_port=0)
    yield gw
    await gw.stop()


async def history(http: ClientSession, broker_url: str, **query: str) -> list[dict]:
    """The broker's history (structured events), filtered like ``GET /events``."""
    async with http.get(f"{broker_url}/events", params={"limit": "1000", **query}) as response:
        assert response.status == 200, await response.text()
        return (await response.json())["events"]


@dataclass(frozen=True)
class Seeded:
    """What the platform fixture put in place: a tuned, deployed run and a run whose training crashed."""

    dashboard: Dashboard
    broker_url: str
    ok_runid: str
    failing_runid: str
    failed_event_id: str  # the failing run's features.ready, dead-lettered by the broker
    revision: str


@pytest.fixture
async def platform(  # type: ignore[no-untyped-def]
    broker: BrokerServer, gateway: Gateway, registry: ModelRegistry, http: ClientSession, start_dashboard, failing_runid
) -> Seeded:
    """Real registry + gateway + broker with two runs' events; the failing run's step.failed made by the broker."""
    ok_runid = new_runid()
    card = await asyncio.to_thread(
        registry.register, "digits", tiny_onnx(),
        metrics={"test_accuracy": 0.9512, "val_accuracy": 0.96}, params={"lr": 0.003},
        task="classification", classes=list(range(10)),
        lineage={"run": ok_runid, "dataset": "datasets/digits/x/", "trial": "trial-0001",
                 "tuning": {"experiment": ok_runid, "best_trial": "trial-0001"}},
    )  # fmt: skip
    await asyncio.to_thread(registry.set_alias, "digits", "production", card.version, actor="test")
    await asyncio.to_thread(
        registry.register, "diabetes", tiny_onnx(1), metrics={"test_rmse": 53.2, "test_r2": 0.41}, task="regression"
    )
    gw = f"http://127.0.0.1:{gateway.port}"
    async with http.post(f"{gw}/v1/models/digits/revisions", json={}) as response:
        assert response.status == 201, await response.text()
        revision = (await response.json())["revision"]
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]}
    async with http.post(f"{gw}/v2/models/digits/infer", json=body) as response:
        assert response.status == 200, await response.text()
    failing = start_of_run("iris", "train", runid=failing_runid)
    for event in [*failing, *tuned_run(ok_runid, card, f"{gw}/v2/models/digits/infer")]:
        await publish_async(broker.url, event)

    async def dead_lettered() -> list[dict]:
        return await history(http, broker.url, runid=failing_runid, type=STEP_FAILED)

    await eventually(dead_lettered, what="the broker's step.failed for the failing run")
    dashboard = await start_dashboard(broker.url, gw)
    return Seeded(dashboard, broker.url, ok_runid, failing_runid, failing[-1].get_id(), revision)
