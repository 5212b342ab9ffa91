"""Helpers of the lifecycle tests: a step context (a real store, emitted events collected in a list) and digits
written in every raw format ingest reads."""

from __future__ import annotations

import gzip
import io
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from cloudevents.core.v1.event import CloudEvent

from eventing.events import DATA_ARRIVED, new_event
from functions.ml.readers import write_idx
from infra.settings import Settings
from infra.store import ArtifactStore


@dataclass
class StepContext:
    """What the function host hands a step: the store, settings, a logger, and emit (collected here)."""

    store: ArtifactStore
    settings: Settings
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("tests.lifecycle"))
    emitted: list[CloudEvent] = field(default_factory=list)

    async def emit(self, event: CloudEvent) -> None:
        self.emitted.append(event)


def keys(store: ArtifactStore, prefix: str = "") -> list[str]:
    return [info.key for info in store.list(prefix)]


def arrived(
    key: str, store: ArtifactStore, options: dict[str, Any] | None = None, runid: str | None = None
) -> CloudEvent:
    """A data.arrived event for an object already in the store."""
    data: dict[str, Any] = {"bucket": "knflow", "key": key, "size": store.stat(key).size}
    if options is not None:
        data["options"] = options
    return new_event(DATA_ARRIVED, "/tests/lifecycle", data, runid=runid)


@dataclass(frozen=True)
class Digits:
    images: np.ndarray  # (N, 8, 8) uint8, values 0..16
    labels: np.ndarray  # (N,) uint8

    @property
    def flat(self) -> np.ndarray:
        return self.images.reshape(len(self.images), -1)


def digits_csv(d: Digits, label: str = "label") -> bytes:
    header = ",".join([f"p{i}" for i in range(64)] + [label])
    rows = [",".join(map(str, [*row.tolist(), int(y)])) for row, y in zip(d.flat, d.labels, strict=True)]
    return ("\n".join([header, *rows]) + "\n").encode()


def digits_npz(d: Digits, images: bool = False) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x=d.images if images else d.flat, y=d.labels)
    return buf.getvalue()


def digits_parquet(d: Digits, label: str = "label") -> bytes:
    columns = {f"p{i}": d.flat[:, i].astype(np.float64) for i in range(64)}
    columns[label] = d.labels.astype(np.int64)
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def put_digits_idx(store: ArtifactStore, prefix: str, d: Digits, gz: bool = True) -> str:
    """Write the labels then the images file (the images key starts ingest); return the images key."""
    suffix = ".gz" if gz else ""
    pack = gzip.compress if gz else (lambda b: b)
    store.put(f"{prefix}-labels-idx1-ubyte{suffix}", pack(write_idx(d.labels)))
    key = f"{prefix}-images-idx3-ubyte{suffix}"
    store.put(key, pack(write_idx(d.images)))
    return key
