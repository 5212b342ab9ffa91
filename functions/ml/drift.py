"""Data drift per feature: the population stability index (PSI) of a window of inputs against the training split.

Each feature's bins come from its training values: the deciles that lie strictly between the training minimum and
maximum cut ``[min, max]`` into up to ten bins, and two more take what falls below the minimum or above the maximum
(never seen in training). ``PSI = sum((a - e) * ln(a / e))`` over the bins, ``e`` the training share of a bin and
``a`` the window's, both floored at ``EPSILON`` so an empty bin counts without dividing by zero. Conventional
reading: below 0.1 no shift, 0.1-0.2 a moderate one, above 0.2 a significant one. An unshifted window of ``n`` rows
scores about ``(bins - 1) * (1/n + 1/rows_train)`` per feature by chance alone, so windows of a few hundred rows keep
the noise well under 0.2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

BINS = 10
EPSILON = 1e-4


@dataclass(frozen=True)
class Reference:
    """Per feature: training minimum and maximum, interior cut points, and the training share of every bin."""

    low: np.ndarray  # [features]
    high: np.ndarray  # [features]
    cuts: tuple[np.ndarray, ...]  # per feature, sorted, strictly between low and high
    shares: tuple[np.ndarray, ...]  # per feature, len(cuts) + 3 bins: below, [low, c1), ..., [ck, high], above
    rows: int

    @property
    def features(self) -> int:
        return len(self.low)

    def to_dict(self) -> dict[str, Any]:
        return {
            "measure": "psi",
            "rows": self.rows,
            "low": self.low.tolist(),
            "high": self.high.tolist(),
            "cuts": [c.tolist() for c in self.cuts],
            "shares": [s.round(6).tolist() for s in self.shares],
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Reference:
        return cls(
            np.asarray(raw["low"], np.float64),
            np.asarray(raw["high"], np.float64),
            tuple(np.asarray(c, np.float64) for c in raw["cuts"]),
            tuple(np.asarray(s, np.float64) for s in raw["shares"]),
            int(raw["rows"]),
        )


def reference(x_train: np.ndarray, bins: int = BINS) -> Reference:
    """The bins of every feature of the (flattened) training rows and the training share of each."""
    flat = np.asarray(x_train, np.float64).reshape(len(x_train), -1)
    low, high = flat.min(axis=0), flat.max(axis=0)
    quantiles = np.quantile(flat, np.linspace(0, 1, bins + 1)[1:-1], axis=0)  # [bins - 1, features]
    cuts, shares = [], []
    for j in range(flat.shape[1]):
        inner = np.unique(quantiles[:, j])
        inner = inner[(inner > low[j]) & (inner < high[j])]
        cuts.append(inner)
        shares.append(_shares(flat[:, j], low[j], high[j], inner))
    return Reference(low, high, tuple(cuts), tuple(shares), len(flat))


def _shares(values: np.ndarray, low: float, high: float, cuts: np.ndarray) -> np.ndarray:
    bins = 1 + np.searchsorted(cuts, values, side="right")
    bins = np.where(values < low, 0, np.where(values > high, len(cuts) + 2, bins))
    return np.bincount(bins, minlength=len(cuts) + 3) / max(len(values), 1)


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """The population stability index of two distributions over the same bins."""
    e, a = np.maximum(expected, EPSILON), np.maximum(actual, EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def scores(ref: Reference, window: np.ndarray) -> np.ndarray:
    """Each feature's PSI between the window's rows (flattened like the training rows) and the training split."""
    flat = np.asarray(window, np.float64).reshape(len(window), -1)
    if flat.shape[1] != ref.features:
        raise ValueError(f"rows of {flat.shape[1]} values against {ref.features} training features")
    return np.array(
        [psi(ref.shares[j], _shares(flat[:, j], ref.low[j], ref.high[j], ref.cuts[j])) for j in range(ref.features)]
    )
