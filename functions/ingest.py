"""Ingest: on data.arrived, read the raw object, validate it, store a typed data set version, emit dataset.ingested."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cloudevents.core.v1.event import CloudEvent

from eventing.events import new_event, runid_of
from functions.contract import DATASET_INGESTED, data_of
from functions.ml import readers
from functions.ml.datasets import write_dataset
from functions.ml.readers import RawData
from functions.ml.validation import validate
from functions.runoptions import DATASET_OPTIONS, experiment_of, resolve_options, save_options
from infra.errors import InvalidRequest, NotFound, Unavailable
from infra.store import ArtifactStore

SOURCE = "/knflow/functions/ingest"
#: knflow writes these itself; a store that notifies on every write must not turn them into new runs
PLATFORM_PREFIXES = ("datasets", "features", "runs", "models", "drift")


def handle(event: CloudEvent, ctx: Any) -> CloudEvent | None:
    """data.arrived → dataset.ingested (None for objects that are not data: options files, IDX label halves)."""
    data = data_of(event)
    key = data.get("key")
    if not isinstance(key, str) or not key:
        raise InvalidRequest("data.arrived needs data.key (the object key of the raw file)")
    name = key.rsplit("/", 1)[-1]
    if key.split("/", 1)[0] in PLATFORM_PREFIXES:
        ctx.log.info("ingest: %s is one of knflow's own artifacts; not raw data", key)
        return None
    if name == DATASET_OPTIONS or readers.IDX_LABELS in name:
        ctx.log.info("ingest: %s is not a data file on its own; nothing to do", key)
        return None
    runid = runid_of(event)
    if not runid:
        raise InvalidRequest("data.arrived needs the runid extension")
    dataset = data.get("dataset") or dataset_of(key)
    options = resolve_options(ctx.store, data.get("options"), dataset)
    raw, sources = read_raw(ctx.store, key, options.label, options.categorical)
    validated = validate(raw, key, task=options.task)
    version = write_dataset(ctx.store, dataset, validated, {"bucket": data.get("bucket"), "objects": sources})
    save_options(ctx.store, runid, options)
    ctx.log.info("ingest: %s → %s (%d rows, new=%s)", key, version.prefix, version.rows, version.created)
    out = {
        "dataset": dataset,
        "experiment": experiment_of(options, dataset),
        "version": version.sha256,
        "prefix": version.prefix,
        "data_key": version.data_key,
        "schema_key": version.prefix + "schema.json",
        "summary_key": version.prefix + "summary.json",
        "rows": version.rows,
        "num_classes": version.num_classes,
        "task": version.task,
        "classes": list(version.classes),
        "kind": version.kind,
        "source": {"bucket": data.get("bucket"), "objects": sources},
    }
    return new_event(DATASET_INGESTED, SOURCE, out, cause=event, subject=dataset)


def dataset_of(key: str) -> str:
    """The data set a raw key belongs to: ``raw/<dataset>/<file>`` → dataset; else the file stem."""
    parts = key.split("/")
    if len(parts) >= 3 and parts[0] == "raw":
        return parts[1]
    stem = parts[-1].split(".", 1)[0]
    return stem.replace(readers.IDX_IMAGES, "").strip("-_.") or "data"


def read_raw(
    store: ArtifactStore, key: str, label: str, categorical: Sequence[str] = ()
) -> tuple[RawData, list[dict[str, Any]]]:
    """Read the raw object(s) a key names; the list says which objects (key, sha256, size) were read."""
    fmt = readers.format_of(key)
    if categorical and fmt not in ("csv", "parquet"):
        raise InvalidRequest(f"{key}: the run option 'categorical' is for CSV and Parquet columns, not {fmt} files")
    blob, info = _fetch(store, key)
    sources = [info]
    if not blob:
        raise InvalidRequest(f"{key}: the file is empty")
    if fmt == "csv":
        raw = readers.read_csv(blob, key, label, categorical)
    elif fmt == "npz":
        raw = readers.read_npz(blob, key)
    elif fmt == "parquet":
        raw = readers.read_parquet(blob, key, label, categorical)
    else:
        labels_key = readers.idx_partner(key)
        if not store.exists(labels_key):
            # the labels half may still be uploading: retryable, delivery tries again with backoff
            raise Unavailable(f"{key}: its labels file {labels_key} is not in the store (yet)")
        labels, labels_info = _fetch(store, labels_key)
        sources.append(labels_info)
        raw = readers.read_idx_pair(blob, labels, key, labels_key)
    return raw, sources


def _fetch(store: ArtifactStore, key: str) -> tuple[bytes, dict[str, Any]]:
    try:
        info = store.stat(key)
        return store.get(key), {"key": key, "sha256": info.sha256, "size": info.size}
    except NotFound:
        raise InvalidRequest(f"{key}: no such object in the store") from None
