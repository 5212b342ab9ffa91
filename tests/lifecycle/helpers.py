"""Helpers of the lifecycle tests: a step context (a real store, emitted events collected in a list) and digits
written in every raw format ingest reads."""

from __future__ import annotations

import gzip
import io
import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from cloudevents.core.v1.event import CloudEvent

from eventing.events import new_event
from functions.contract import DATA_ARRIVED, FEATURES_READY
from functions.ml.readers import write_idx
from functions.runoptions import RunOptions, save_options
from infra.localservices import free_platform_ports
from infra.settings import Settings, load_settings
from infra.store import ArtifactStore
from serving.registry import ModelCard, TensorSpec


@dataclass
class StepContext:
    """What the function host hands a step: the store, settings, a logger, and emit (collected here)."""

    store: ArtifactStore
    settings: Settings
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("tests.lifecycle"))
    emitted: list[CloudEvent] = field(default_factory=list)

    async def emit(self, event: CloudEvent) -> None:
        self.emitted.append(event)

    def emit_sync(self, event: CloudEvent) -> None:
        self.emitted.append(event)


def platform_settings(directory: Path) -> Settings:
    """Settings of a platform of its own: data under ``directory``, free loopback ports, an empty config file."""
    config = directory / "knflow.toml"
    config.write_text("")
    env = {
        "KNFLOW_DATA_DIR": str(directory),
        **free_platform_ports(),
    }
    return load_settings(env, config_file=config)


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


class MemoryRegistry:
    """An in-memory stand-in with serving.registry.ModelRegistry's API (register/get/set_alias/aliases)."""

    def __init__(self) -> None:
        self.cards: dict[str, list[ModelCard]] = {}
        self.by_key: dict[str, ModelCard] = {}
        self.alias_map: dict[str, dict[str, int]] = {}
        self.notes: list[dict] = []
        self.calls = 0

    def register(
        self, name, onnx, *, inputs, outputs, metrics, params, lineage, idempotency_key, task="", classes=()
    ) -> ModelCard:
        import hashlib

        self.calls += 1
        if idempotency_key in self.by_key:
            return self.by_key[idempotency_key]
        versions = self.cards.setdefault(name, [])
        card = ModelCard(
            name,
            len(versions) + 1,
            hashlib.sha256(onnx).hexdigest(),
            len(onnx),
            f"models/{name}/{len(versions) + 1}/model.onnx",
            tuple(TensorSpec(t["name"], t["datatype"], tuple(t["shape"])) for t in inputs),
            tuple(TensorSpec(t["name"], t["datatype"], tuple(t["shape"])) for t in outputs),
            metrics,
            params,
            lineage,
            created="",
            task=task,
            classes=list(classes),
        )
        versions.append(card)
        self.by_key[idempotency_key] = card
        return card

    def get(self, name, version):
        from infra.errors import NotFound

        if isinstance(version, str) and not version.isdigit():
            if version not in self.alias_map.get(name, {}):
                raise NotFound(f"{name} has no alias {version}")
            version = self.alias_map[name][version]
        try:
            return self.cards[name][int(version) - 1]
        except (KeyError, IndexError):
            raise NotFound(f"no {name} version {version}") from None

    def note(self, name, action, *, version, actor, reason):
        self.get(name, version)
        self.notes.append({"name": name, "action": action, "version": version, "actor": actor, "reason": reason})

    def set_alias(self, name, alias, version, *, actor="", reason=""):
        self.alias_map.setdefault(name, {})[alias] = int(version)

    def aliases(self, name):
        return dict(self.alias_map.get(name, {}))


#: a store holding one features version of the digits, its features.ready data, and the data directory
Prepared = tuple[ArtifactStore, dict[str, Any], Path]
_prepared_runs = itertools.count()


def context_of(prepared: Prepared) -> StepContext:
    """A fresh step context over a prepared store (its data directory for deployed code and job directories)."""
    store, _, data_dir = prepared
    return StepContext(store=store, settings=load_settings(env={"KNFLOW_DATA_DIR": str(data_dir)}))


def ready_of(prepared: Prepared, train_options: dict[str, Any], tuning: dict | None = None) -> CloudEvent:
    """A features.ready event of a new run over the prepared features, whose options are ``train_options`` (and a
    tuning spec)."""
    store, features, _ = prepared
    runid = f"run-prepared-{next(_prepared_runs)}"
    save_options(store, runid, RunOptions(train=train_options, tuning=tuning))
    return new_event(FEATURES_READY, "/t", features, runid=runid, extensions={"mode": "tune" if tuning else "train"})
