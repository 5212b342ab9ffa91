"""Serving fixtures: small real ONNX models, a registry on a file store, and an in-process gateway."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import ClientSession

from infra.settings import load_settings
from infra.store import ArtifactStore, open_store
from serving.autoscaler import ScalePolicy
from serving.gateway import Gateway
from serving.registry import ModelRegistry
from tests.unguarded import UNGUARDED


@pytest.fixture
def file_store(tmp_path: Path) -> ArtifactStore:
    return open_store(f"file://{tmp_path / 'artifacts'}")


@pytest.fixture
def registry(file_store: ArtifactStore) -> ModelRegistry:
    return ModelRegistry(file_store)


@pytest.fixture
async def start_gateway(tmp_path: Path, file_store: ArtifactStore):  # type: ignore[no-untyped-def]
    """Start in-process gateways (stopped at teardown): ``await start_gateway(policy=..., **serving_overrides)``;
    ``broker_port`` points the gateway's rollout notices at an in-process broker."""
    started: list[Gateway] = []

    async def start(
        policy: ScalePolicy | None = None,
        store: ArtifactStore | None = None,
        broker_port: int | None = None,
        **serving: object,
    ) -> Gateway:
        env = {"KNFLOW_DATA_DIR": str(tmp_path), "KNFLOW_ARTIFACTS": file_store.url, **UNGUARDED}
        settings = load_settings(env=env)
        settings = dataclasses.replace(
            settings,
            serving=dataclasses.replace(settings.serving, autoscale_tick_s=0.1, **serving),
            broker_port=broker_port or settings.broker_port,
        )
        gateway = Gateway(settings, store or file_store, policy=policy)
        await gateway.start(port=0, grpc_port=0)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        await gateway.stop()


@pytest.fixture
async def http() -> AsyncIterator[ClientSession]:
    async with ClientSession() as session:
        yield session
