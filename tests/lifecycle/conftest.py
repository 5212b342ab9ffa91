"""Fixtures of the lifecycle tests: a file store, a step context over it, the bundled digits, and a whole platform
per test module that asks for one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from functions import featurize, ingest
from infra.settings import load_settings
from infra.store import ArtifactStore, open_store
from knflow.platform import Platform
from tests.lifecycle.helpers import Digits, Prepared, StepContext, arrived, digits_csv, platform_settings


@pytest.fixture
def fstore(tmp_path: Path) -> ArtifactStore:
    return open_store(f"file://{tmp_path / 'artifacts'}")


@pytest.fixture
def ctx(fstore: ArtifactStore) -> StepContext:
    return StepContext(store=fstore, settings=load_settings(env={}))


@pytest.fixture(scope="session")
def digits() -> Digits:
    bunch = load_digits()
    return Digits(bunch.images.astype(np.uint8), bunch.target.astype(np.uint8))


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """The platform as ``knflow up`` runs it (broker, functions, gateway, dashboard), once per test module."""
    with Platform.start(platform_settings(tmp_path_factory.mktemp("platform"))) as running:
        yield running


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, digits: Digits) -> Prepared:
    """A store holding one features version of the digits (ingested and featurized once), and a data directory."""
    data_dir = tmp_path_factory.mktemp("data")
    store = open_store(f"file://{data_dir / 'artifacts'}")
    ctx = StepContext(store=store, settings=load_settings(env={"KNFLOW_DATA_DIR": str(data_dir)}))
    store.put("raw/digits/d.csv", digits_csv(digits))
    ready = featurize.handle(ingest.handle(arrived("raw/digits/d.csv", store), ctx), ctx)
    return store, ready.get_data(), data_dir
