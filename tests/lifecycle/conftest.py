"""Fixtures of the lifecycle tests: a file store, a step context over it, and the bundled digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from infra.settings import load_settings
from infra.store import ArtifactStore, open_store
from tests.lifecycle.helpers import Digits, StepContext


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
