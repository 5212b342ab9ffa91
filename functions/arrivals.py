"""The ``data.arrived`` event for an object already in the artifact store, as knflow announces it itself.

The knflow server's submissions and the schedules announce data this way (the store's arrival sources skip such
objects): the event carries the run options and names the pipeline the run takes. Which objects under
``raw/<dataset>/`` are data, and which one is a data set's newest, is decided here too.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from cloudevents.core.v1.event import CloudEvent

from eventing.events import NAMESPACE, PIPELINE, new_event
from functions.contract import DATA_ARRIVED, NOT_DATA, RAW_PREFIX
from functions.runtime.pipeline import PipelineSpec, takes_type
from infra.errors import InvalidRequest
from infra.namespaces import DEFAULT
from infra.settings import StoreLocation
from infra.store import ArtifactStore, ObjectInfo, validate_key


def raw_prefix(dataset: str) -> str:
    """Where a data set's raw objects live; ``InvalidRequest`` for a name that cannot be one key segment."""
    if not isinstance(dataset, str) or not dataset or "/" in dataset:
        raise InvalidRequest(f"dataset {dataset!r} must be a non-empty name without '/'")
    validate_key(f"{RAW_PREFIX}{dataset}/x")
    return f"{RAW_PREFIX}{dataset}/"


def is_data(key: str) -> bool:
    """Whether an object under ``raw/`` is data that can start a run (not a companion file, see ``NOT_DATA``)."""
    name = key.rsplit("/", 1)[-1]
    return not any(fnmatch.fnmatchcase(name, pattern) for pattern in NOT_DATA)


def newest_raw(store: ArtifactStore, dataset: str) -> ObjectInfo:
    """The data set's most recently written raw data object; ``InvalidRequest`` when it has none."""
    prefix = raw_prefix(dataset)
    found = [info for info in store.list(prefix) if is_data(info.key)]
    if not found:
        raise InvalidRequest(f"dataset {dataset!r} has no data under {prefix} in {store.url}")
    newest = max(found, key=lambda info: (info.modified, info.key))
    return store.stat(newest.key)  # a listing may leave out the sha256


def bucket_of(location: StoreLocation) -> str:
    """The bucket name an arrival names: the S3 bucket, or the file store's directory name (as its watcher does)."""
    return location.bucket if location.scheme == "s3" else (location.path.name if location.path else "")


def takes_arrivals(spec: PipelineSpec) -> PipelineSpec:
    """``spec`` if one of its steps takes ``data.arrived`` (a run can start in it); ``InvalidRequest`` otherwise."""
    if not any(takes_type(trigger, DATA_ARRIVED) for step in spec.steps for trigger in step.triggers):
        raise InvalidRequest(f"pipeline {spec.name!r} has no step that takes {DATA_ARRIVED}: no run can start in it")
    return spec


def arrival(
    location: StoreLocation,
    store: ArtifactStore,
    info: ObjectInfo,
    *,
    dataset: str,
    pipeline: str,
    options: dict[str, Any] | None,
    source: str,
    cause: CloudEvent | None = None,
    runid: str | None = None,
    extra: dict[str, Any] | None = None,
    namespace: str | None = None,
) -> CloudEvent:
    """``data.arrived`` for ``info``: a new run (``runid``), or the run of ``cause``, taking ``pipeline``.

    ``options`` None leaves them to the data set's options file (or the defaults), as for any object.
    A caused arrival's id is derived from its cause's, so a redelivered cause repeats the same event.
    """
    data: dict[str, Any] = {
        "bucket": bucket_of(location),
        "key": info.key,
        "size": info.size,
        "etag": info.sha256,
        "store": store.url,
        "dataset": dataset,
        **(extra or {}),
    }
    if options is not None:
        data["options"] = options
    extensions: dict[str, Any] = {PIPELINE: pipeline}
    if namespace is not None and namespace != DEFAULT:  # ``default``'s events stay exactly as they were
        extensions[NAMESPACE] = namespace
    if cause is not None:
        extensions["id"] = f"{cause.get_id()}.arrived"
    return new_event(DATA_ARRIVED, source, data, cause=cause, runid=runid, subject=info.key, extensions=extensions)
