"""Features: a seeded stratified train/validation/test split, a normalization fitted on train only, statistics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from functions.ml.drift import reference
from functions.ml.validation import Dataset
from functions.ml.versions import content_hash, get_json, is_complete, json_bytes, load_npz, npz_bytes, write_version
from infra.errors import InvalidRequest, NotFound
from infra.store import ArtifactStore

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Transform:
    """Standardization ``(x - mean) / std`` fitted on the training split.

    Per feature for tabular data, one scalar for images.
    """

    kind: str
    input_shape: tuple[int, ...]  # one row's shape: (features,) or (H, W)
    mean: np.ndarray
    std: np.ndarray

    def apply(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "input_shape": list(self.input_shape),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Transform:
        return cls(
            raw["kind"],
            tuple(raw["input_shape"]),
            np.asarray(raw["mean"], np.float32),
            np.asarray(raw["std"], np.float32),
        )


@dataclass(frozen=True)
class Splits:
    """Raw (untransformed) arrays per split; the transform travels with the model."""

    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]


def split(data: Dataset, *, seed: int, val_fraction: float, test_fraction: float) -> Splits:
    """Stratified train/validation/test split, reproducible for a seed."""
    counts = np.bincount(data.y)
    present = counts[counts > 0]
    if present.min() < 3:
        raise InvalidRequest(f"a class has {int(present.min())} rows; stratified splitting needs at least 3 per class")
    idx = np.arange(len(data.y))
    try:
        rest, test = train_test_split(idx, test_size=test_fraction, stratify=data.y, random_state=seed)
        rel_val = val_fraction / (1.0 - test_fraction)
        train, val = train_test_split(rest, test_size=rel_val, stratify=data.y[rest], random_state=seed + 1)
    except ValueError as exc:
        raise InvalidRequest(f"cannot split the data set: {exc}") from None
    parts = {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}
    return Splits(x={k: data.x[v] for k, v in parts.items()}, y={k: data.y[v] for k, v in parts.items()})


def fit_transform(x_train: np.ndarray, kind: str) -> Transform:
    """Fit the standardization on the training features only."""
    if kind == "image":
        mean = np.asarray(x_train.mean(), np.float32)
        std = np.asarray(max(float(x_train.std()), 1e-6), np.float32)
    else:
        mean = x_train.mean(axis=0).astype(np.float32)
        std = x_train.std(axis=0).astype(np.float32)
        std = np.where(std < 1e-6, 1.0, std).astype(np.float32)  # constant features pass through centred
    return Transform(kind, tuple(x_train.shape[1:]), mean, std)


def statistics(splits: Splits, num_classes: int) -> dict[str, Any]:
    """Per-feature mean/std/min/max and histogram (the drift step's reference) on train; class counts per split."""
    flat = splits.x["train"].reshape(len(splits.x["train"]), -1)
    return {
        "features": {
            "mean": flat.mean(axis=0).round(6).tolist(),
            "std": flat.std(axis=0).round(6).tolist(),
            "min": flat.min(axis=0).tolist(),
            "max": flat.max(axis=0).tolist(),
        },
        "histogram": reference(flat).to_dict(),
        "class_counts": {s: np.bincount(splits.y[s], minlength=num_classes).tolist() for s in SPLITS},
        "rows": {s: len(splits.y[s]) for s in SPLITS},
    }


def write_features(
    store: ArtifactStore, dataset: str, splits: Splits, transform: Transform, meta: dict[str, Any]
) -> tuple[str, str]:
    """Store a features version (splits, transform, statistics; manifest last) → (sha256, prefix)."""
    arrays = {f"{a}_{s}": getattr(splits, a)[s] for a in ("x", "y") for s in SPLITS}
    sha = content_hash(arrays, {"transform": transform.to_dict(), **meta})
    prefix = f"features/{dataset}/{sha}/"
    parts = {
        "splits.npz": npz_bytes(arrays),
        "transform.json": json_bytes(transform.to_dict()),
        "stats.json": json_bytes(statistics(splits, meta["num_classes"])),
    }
    write_version(store, prefix, parts, {"dataset": dataset, **meta})
    return sha, prefix


def read_features(store: ArtifactStore, prefix: str) -> tuple[Splits, Transform, dict[str, Any]]:
    """A stored features version: splits, transform and manifest; NotFound unless complete."""
    if not is_complete(store, prefix):
        raise NotFound(f"no complete features version at {prefix}")
    arrays = load_npz(store, prefix + "splits.npz")
    splits = Splits(x={s: arrays[f"x_{s}"] for s in SPLITS}, y={s: arrays[f"y_{s}"] for s in SPLITS})
    return (
        splits,
        Transform.from_dict(get_json(store, prefix + "transform.json")),
        get_json(store, prefix + "summary.json"),
    )
