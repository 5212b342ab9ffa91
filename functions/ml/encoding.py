"""Categorical columns as numbers: each one one-hot over the categories of the training split, numeric columns as
they are. The same encoding runs in NumPy for training and inside the served ONNX graph (functions.ml.graph)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from functions.ml.columns import CATEGORICAL, NUMERIC, Column


@dataclass(frozen=True)
class Encoder:
    """How a tabular row becomes the network's float row: the numeric columns (in file order), then one block per
    categorical column with a 1 for its category. A category the training split never had encodes as all zeros."""

    columns: tuple[Column, ...]  # every feature column in file order: the served model's inputs
    categories: tuple[tuple[str, ...], ...]  # per categorical column (in file order), its sorted categories

    @property
    def numeric(self) -> tuple[str, ...]:
        return tuple(col.name for col in self.columns if col.type == NUMERIC)

    @property
    def categorical(self) -> tuple[str, ...]:
        return tuple(col.name for col in self.columns if col.type == CATEGORICAL)

    @property
    def width(self) -> int:
        """The length of an encoded row."""
        return len(self.numeric) + sum(len(cats) for cats in self.categories)

    def one_hot_mask(self) -> np.ndarray:
        """True for the encoded columns that are one-hot (they are not standardized)."""
        return np.arange(self.width) >= len(self.numeric)

    def encode(self, x: np.ndarray, c: np.ndarray) -> np.ndarray:
        """Numeric features ``x`` (rows by numeric columns) and categories ``c`` (rows by categorical columns) → the
        encoded float32 rows."""
        blocks = [np.asarray(x, np.float32).reshape(len(x), -1)]
        for j, cats in enumerate(self.categories):
            lookup = {category: i for i, category in enumerate(cats)}
            index = np.fromiter((lookup.get(v, -1) for v in c[:, j].tolist()), dtype=np.int64, count=len(c))
            block = np.zeros((len(c), len(cats)), np.float32)
            known = index >= 0
            block[np.flatnonzero(known), index[known]] = 1.0
            blocks.append(block)
        return np.concatenate(blocks, axis=1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": [{"name": col.name, "type": col.type} for col in self.columns],
            "categories": [list(cats) for cats in self.categories],
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Encoder:
        columns = tuple(Column(col["name"], col["type"]) for col in raw["columns"])
        return cls(columns, tuple(tuple(cats) for cats in raw["categories"]))


def fit_encoder(columns: tuple[Column, ...], c_train: np.ndarray) -> Encoder:
    """Learn each categorical column's categories from the training split only (sorted, so the order is stable)."""
    categories = tuple(tuple(sorted(set(c_train[:, j].tolist()))) for j in range(c_train.shape[1]))
    return Encoder(columns, categories)
