"""Featurize: on dataset.ingested, split the data, fit the categorical encoding, the normalization and (regression)
the target's scale on train, store a features version, and emit features.ready."""

from __future__ import annotations

from typing import Any

from cloudevents.core.v1.event import CloudEvent

from eventing.events import new_event, runid_of
from functions.contract import FEATURES_READY, data_of
from functions.ml.datasets import read_dataset
from functions.ml.features import featurize, split, write_features
from functions.ml.graph import check_column_names
from functions.runoptions import load_options
from infra.errors import InvalidRequest, NotFound

SOURCE = "/knflow/functions/featurize"
MODE = "mode"  # extension on features.ready: "train" or "tune", so triggers can route by exact match


def handle(event: CloudEvent, ctx: Any) -> CloudEvent:
    """dataset.ingested → features.ready (extension ``mode`` says whether train or tune takes it)."""
    data = data_of(event)
    prefix, dataset = data.get("prefix"), data.get("dataset")
    if not isinstance(prefix, str) or not isinstance(dataset, str):
        raise InvalidRequest("dataset.ingested needs data.prefix and data.dataset")
    options = load_options(ctx.store, runid_of(event))
    try:
        ds, _summary = read_dataset(ctx.store, prefix)
    except NotFound as exc:
        raise InvalidRequest(str(exc)) from None
    splits = split(ds, seed=options.seed, val_fraction=options.val_fraction, test_fraction=options.test_fraction)
    transform = featurize(ds, splits)
    if transform.encoder is not None:
        check_column_names(transform.encoder.columns)
    meta = {
        "dataset_version": data.get("version"),
        "seed": options.seed,
        "val_fraction": options.val_fraction,
        "test_fraction": options.test_fraction,
        "num_classes": ds.num_classes,
        "kind": ds.kind,
        "task": ds.task,
        "classes": list(ds.classes),
    }
    sha, fprefix = write_features(ctx.store, dataset, splits, transform, meta)
    ctx.log.info("featurize: %s → %s (mode %s)", prefix, fprefix, options.mode)
    out = {
        "dataset": dataset,
        "dataset_version": data.get("version"),
        "version": sha,
        "prefix": fprefix,
        "splits_key": fprefix + "splits.npz",
        "transform_key": fprefix + "transform.json",
        "stats_key": fprefix + "stats.json",
        "kind": ds.kind,
        "input_shape": list(transform.input_shape),
        "num_classes": ds.num_classes,
        "task": ds.task,
        "classes": list(ds.classes),
        "rows": {s: len(v) for s, v in splits.y.items()},
        "lineage": {"raw": (data.get("source") or {}).get("objects", []), "dataset": prefix, "features": fprefix},
    }
    return new_event(FEATURES_READY, SOURCE, out, cause=event, subject=dataset, extensions={MODE: options.mode})
