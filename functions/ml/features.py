"""Features: a seeded train/validation/test split (stratified for classification), the encoding, normalization and
target scale fitted on train only, statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from functions.ml.datasets import label_summary
from functions.ml.drift import reference
from functions.ml.encoding import Encoder, fit_encoder
from functions.ml.metrics import CLASSIFICATION, REGRESSION
from functions.ml.validation import Dataset
from functions.ml.versions import content_hash, get_json, is_complete, json_bytes, load_npz, npz_bytes, write_version
from infra.errors import InvalidRequest, NotFound
from infra.store import ArtifactStore

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Transform:
    """What featurize fitted on the training split: the categorical encoding (tabular data with categorical columns),
    the standardization ``(x - mean) / std`` of the encoded row (per feature for tabular data, one scalar for images;
    one-hot columns pass as they are), and for regression the target's scale (the network learns
    ``(y - mean) / std``)."""

    kind: str
    input_shape: tuple[int, ...]  # one encoded row's shape: (features,) or (H, W)
    mean: np.ndarray
    std: np.ndarray
    encoder: Encoder | None = None
    target_mean: float = 0.0
    target_std: float = 1.0

    def apply(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)

    def inputs(self, x: np.ndarray, c: np.ndarray | None) -> np.ndarray:
        """The network's float rows for raw features (categorical columns encoded; not yet standardized)."""
        if self.encoder is None:
            return np.ascontiguousarray(x, dtype=np.float32)
        return self.encoder.encode(x, c if c is not None else np.empty((len(x), 0), dtype=str))

    def to_dict(self) -> dict[str, Any]:
        out = {
            "kind": self.kind,
            "input_shape": list(self.input_shape),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "target_mean": self.target_mean,
            "target_std": self.target_std,
        }
        if self.encoder is not None:
            out["encoder"] = self.encoder.to_dict()
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Transform:
        return cls(
            raw["kind"],
            tuple(raw["input_shape"]),
            np.asarray(raw["mean"], np.float32),
            np.asarray(raw["std"], np.float32),
            Encoder.from_dict(raw["encoder"]) if raw.get("encoder") else None,
            float(raw.get("target_mean", 0.0)),
            float(raw.get("target_std", 1.0)),
        )


@dataclass(frozen=True)
class Splits:
    """Raw (untransformed) arrays per split; the transform travels with the model. ``c`` holds the categorical
    columns (rows by columns of str; zero columns when there are none)."""

    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    c: dict[str, np.ndarray] = field(default_factory=dict)

    def inputs(self, transform: Transform, name: str) -> np.ndarray:
        """The network's float rows of one split."""
        return transform.inputs(self.x[name], self.c.get(name))


def split(data: Dataset, *, seed: int, val_fraction: float, test_fraction: float) -> Splits:
    """Train/validation/test split, reproducible for a seed; stratified by class for classification."""
    stratify = data.y if data.task == CLASSIFICATION else None
    if stratify is not None:
        counts = np.bincount(data.y, minlength=data.num_classes)
        present = np.flatnonzero(counts)
        rare = present[np.argmin(counts[present])]
        if counts[rare] < 3:
            hint = " (a real-valued target? set the run option task: regression)" if len(present) > 20 else ""
            raise InvalidRequest(
                f"class {data.classes[rare]!r} has {int(counts[rare])} rows; stratified splitting needs at least 3 "
                f"per class{hint}"
            )
    from sklearn.model_selection import train_test_split  # here: the readers of features (training workers) skip it

    idx = np.arange(len(data.y))
    try:
        rest, test = train_test_split(idx, test_size=test_fraction, stratify=stratify, random_state=seed)
        rel_val = val_fraction / (1.0 - test_fraction)
        inner = data.y[rest] if stratify is not None else None
        train, val = train_test_split(rest, test_size=rel_val, stratify=inner, random_state=seed + 1)
    except ValueError as exc:
        raise InvalidRequest(f"cannot split the data set: {exc}") from None
    parts = {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}
    c = data.c if data.c is not None else np.empty((len(data.y), 0), dtype=str)
    return Splits(
        x={k: data.x[v] for k, v in parts.items()},
        y={k: data.y[v] for k, v in parts.items()},
        c={k: c[v] for k, v in parts.items()},
    )


def fit_transform(
    x_train: np.ndarray,
    kind: str,
    *,
    encoder: Encoder | None = None,
    c_train: np.ndarray | None = None,
    target: np.ndarray | None = None,
) -> Transform:
    """Fit the standardization (of the encoded rows, when ``encoder``) and, given regression targets, the target's
    scale, on the training split only."""
    if kind == "image":
        mean = np.asarray(x_train.mean(), np.float32)
        std = np.asarray(max(float(x_train.std()), 1e-6), np.float32)
        shape = tuple(x_train.shape[1:])
    else:
        assert encoder is None or c_train is not None, "an encoder encodes the training split's categories too"
        rows = encoder.encode(x_train, c_train) if encoder is not None and c_train is not None else x_train
        mean = rows.mean(axis=0).astype(np.float32)
        std = rows.std(axis=0).astype(np.float32)
        std = np.where(std < 1e-6, 1.0, std).astype(np.float32)  # constant features pass through centred
        if encoder is not None:  # one-hot columns stay 0/1, so an unknown category is all zeros into the network
            mask = encoder.one_hot_mask()
            mean, std = np.where(mask, 0.0, mean).astype(np.float32), np.where(mask, 1.0, std).astype(np.float32)
        shape = tuple(rows.shape[1:])
    t_mean, t_std = (0.0, 1.0) if target is None else (float(target.mean()), max(float(target.std()), 1e-6))
    return Transform(kind, shape, mean, std, encoder, t_mean, t_std)


def featurize(data: Dataset, splits: Splits) -> Transform:
    """The transform of a data set's splits: the categorical encoder (when it has categorical columns), the
    standardization, and the regression target's scale, all fitted on the training split."""
    encoder = fit_encoder(data.columns, splits.c["train"]) if data.categorical_names else None
    target = splits.y["train"] if data.task == REGRESSION else None
    return fit_transform(splits.x["train"], data.kind, encoder=encoder, c_train=splits.c["train"], target=target)


def statistics(splits: Splits, task: str, classes: tuple) -> dict[str, Any]:
    """Per-feature mean/std/min/max and histogram (the drift step's reference) on train, category counts on train,
    and per split the class counts (or the target's range)."""
    flat = splits.x["train"].reshape(len(splits.x["train"]), -1)
    out: dict[str, Any] = {
        "features": {
            "mean": flat.mean(axis=0).round(6).tolist(),
            "std": flat.std(axis=0).round(6).tolist(),
            "min": flat.min(axis=0).tolist() if len(flat) else [],
            "max": flat.max(axis=0).tolist() if len(flat) else [],
        },
        "histogram": reference(flat).to_dict() if len(flat) else None,
        "rows": {s: len(splits.y[s]) for s in SPLITS},
    }
    if task == REGRESSION:
        out["target"] = {s: label_summary(splits.y[s], task, classes)["target"] for s in SPLITS}
    else:
        out["class_counts"] = {s: np.bincount(splits.y[s], minlength=len(classes)).tolist() for s in SPLITS}
    c_train = splits.c.get("train")
    if c_train is not None and c_train.shape[1]:
        out["categories"] = [_counts(c_train[:, j]) for j in range(c_train.shape[1])]
    return out


def _counts(values: np.ndarray) -> dict[str, int]:
    names, counts = np.unique(values, return_counts=True)
    return {str(n): int(k) for n, k in zip(names, counts, strict=True)}


def write_features(
    store: ArtifactStore, dataset: str, splits: Splits, transform: Transform, meta: dict[str, Any]
) -> tuple[str, str]:
    """Store a features version (splits, transform, statistics; manifest last) → (sha256, prefix)."""
    arrays = {f"{a}_{s}": getattr(splits, a)[s] for a in ("x", "y") for s in SPLITS}
    if splits.c and splits.c["train"].shape[1]:
        arrays |= {f"c_{s}": splits.c[s] for s in SPLITS}
    sha = content_hash(arrays, {"transform": transform.to_dict(), **meta})
    prefix = f"features/{dataset}/{sha}/"
    parts = {
        "splits.npz": npz_bytes(arrays),
        "transform.json": json_bytes(transform.to_dict()),
        "stats.json": json_bytes(statistics(splits, meta["task"], tuple(meta["classes"]))),
    }
    write_version(store, prefix, parts, {"dataset": dataset, **meta})
    return sha, prefix


def read_features(store: ArtifactStore, prefix: str) -> tuple[Splits, Transform, dict[str, Any]]:
    """A stored features version: splits, transform and manifest; NotFound unless complete."""
    if not is_complete(store, prefix):
        raise NotFound(f"no complete features version at {prefix}")
    arrays = load_npz(store, prefix + "splits.npz")
    splits = Splits(
        x={s: arrays[f"x_{s}"] for s in SPLITS},
        y={s: arrays[f"y_{s}"] for s in SPLITS},
        c={s: arrays.get(f"c_{s}", np.empty((len(arrays[f"y_{s}"]), 0), dtype=str)) for s in SPLITS},
    )
    return (
        splits,
        Transform.from_dict(get_json(store, prefix + "transform.json")),
        get_json(store, prefix + "summary.json"),
    )
