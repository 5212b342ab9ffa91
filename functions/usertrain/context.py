"""What a user's training entrypoint is called with: ``TrainContext``, a stable API (docs/training-code.md).

It imports nothing but the standard library and NumPy, so an entrypoint can be tried in a notebook with a
``LocalReporter`` before knflow runs it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

#: bumped only when a field changes meaning or goes away; new fields keep the version
API_VERSION = 1


@dataclass(frozen=True)
class Split:
    """One split: ``x`` float64 features, (N, features) or (N, H, W) images, holding exactly the float32 values a
    served model receives; ``y`` int64 class indices 0 .. num_classes-1."""

    x: np.ndarray
    y: np.ndarray


class Reporter(Protocol):
    """Per-epoch metrics and checkpoints, streamed to knflow while the entrypoint runs."""

    def report(self, epoch: int, **metrics: float) -> bool:
        """Record one epoch's metrics (numbers); True means stop now (the median stopping rule of a tuning run)."""
        ...

    def save_checkpoint(self, data: bytes) -> None:
        """Keep ``data`` (e.g. ``torch.save`` into a BytesIO) in the run's artifacts; durable when this returns."""
        ...

    def load_checkpoint(self) -> bytes | None:
        """The last checkpoint this training saved (an earlier delivery of the same event included), or None."""
        ...


@dataclass(frozen=True)
class TrainContext:
    """Everything a training entrypoint ``def train(ctx: TrainContext)`` gets; it returns a model (see the docs)."""

    train: Split
    val: Split
    test: Split
    feature_names: tuple[str, ...]
    num_classes: int
    params: Mapping[str, Any]  # the run's ``train`` options (knflow's keys removed) with the trial's assignments
    seed: int
    device: str  # "cuda" when a GPU is there, else "cpu"
    reporter: Reporter
    mean: np.ndarray  # knflow's standardization, fitted on the training split (one value per feature, or a scalar)
    std: np.ndarray
    kind: str = "tabular"  # or "image"
    task: str = "classification"
    rank: int = 0
    world_size: int = 1
    workdir: Path = field(default_factory=Path.cwd)  # scratch space of this training, removed afterwards
    api_version: int = API_VERSION

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One row's shape: (features,) or (H, W)."""
        return tuple(self.train.x.shape[1:])

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """What a returned ``torch.nn.Module`` receives: ``(x - mean) / std`` in float32, images as (N, 1, H, W).

        knflow puts the same standardization in front of the module it exports, so the served model takes raw rows.
        """
        out = (np.asarray(x, np.float32) - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return out[:, None] if self.kind == "image" else out


class LocalReporter:
    """A Reporter that keeps everything in memory and never says stop: for calling an entrypoint by hand."""

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []
        self.checkpoint: bytes | None = None

    def report(self, epoch: int, **metrics: float) -> bool:
        self.history.append({"epoch": epoch, **check_metrics(epoch, metrics)})
        return False

    def save_checkpoint(self, data: bytes) -> None:
        self.checkpoint = bytes(data)

    def load_checkpoint(self) -> bytes | None:
        return self.checkpoint


def check_metrics(epoch: int, metrics: Mapping[str, Any]) -> dict[str, float]:
    """The metrics as plain floats; ValueError naming what is wrong (a bad epoch, a non-number, NaN or infinity)."""
    if isinstance(epoch, bool) or not isinstance(epoch, int | np.integer) or epoch < 1:
        raise ValueError(f"report: epoch must be a whole number >= 1, got {epoch!r}")
    out = {}
    for name, value in metrics.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"report: metric {name}={value!r} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"report: metric {name} is {number} in epoch {epoch}")
        out[name] = number
    return out
