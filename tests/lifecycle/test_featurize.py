"""Featurize: a seeded stratified split, a normalization fitted on train only, and a complete features version."""

from __future__ import annotations

import numpy as np
import pytest

from functions import featurize, ingest
from functions.contract import FEATURES_READY
from functions.ml.features import read_features
from functions.ml.versions import write_version
from infra.errors import InvalidRequest, NotFound
from tests.lifecycle.helpers import arrived, digits_csv, keys


def _ingested(ctx, digits, options=None):
    ctx.store.put("raw/digits/d.csv", digits_csv(digits))
    return ingest.handle(arrived("raw/digits/d.csv", ctx.store, options=options), ctx)


def test_split_is_stratified_seeded_and_normalized_on_train_only(ctx, digits):
    out = featurize.handle(_ingested(ctx, digits), ctx)
    assert out.get_type() == FEATURES_READY and out.get_extension("mode") == "train"
    data = out.get_data()
    splits, transform, _manifest = read_features(ctx.store, data["prefix"])
    sizes = {s: len(splits.y[s]) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == 1797 and abs(sizes["test"] - 0.15 * 1797) <= 1
    overall = np.bincount(digits.labels) / 1797
    for s in ("train", "val", "test"):
        share = np.bincount(splits.y[s], minlength=10) / sizes[s]
        assert np.abs(share - overall).max() < 0.02, s  # stratified: class shares follow the whole set
    np.testing.assert_allclose(transform.mean, splits.x["train"].mean(axis=0), atol=1e-4)
    assert not np.allclose(transform.mean, np.concatenate(list(splits.x.values())).mean(axis=0), atol=1e-4)
    assert data["lineage"]["dataset"].startswith("datasets/digits/") and data["input_shape"] == [64]
    assert {"splits.npz", "transform.json", "stats.json", "summary.json"} == {
        k.rsplit("/", 1)[-1] for k in keys(ctx.store, data["prefix"])
    }


def test_same_seed_same_features_version_other_seed_other_split(ctx, digits):
    ingested = _ingested(ctx, digits)
    first = featurize.handle(ingested, ctx).get_data()
    again = featurize.handle(ingested, ctx).get_data()
    assert first["version"] == again["version"]
    other = featurize.handle(_ingested(ctx, digits, options={"seed": 7}), ctx).get_data()
    assert other["version"] != first["version"]


def test_tuning_runs_are_routed_to_tune(ctx, digits):
    options = {"tuning": {"parameters": [{"name": "lr", "type": "double", "min": 1e-3, "max": 1e-1}]}}
    assert featurize.handle(_ingested(ctx, digits, options=options), ctx).get_extension("mode") == "tune"


def test_a_version_without_its_manifest_is_not_a_version(ctx, digits):
    write_version(ctx.store, "features/x/abc/", {"splits.npz": b"partial"}, {})
    ctx.store.delete("features/x/abc/summary.json")  # as if the writer died before the manifest
    with pytest.raises(NotFound):
        read_features(ctx.store, "features/x/abc/")


def test_unknown_dataset_prefix_is_refused(ctx, digits):
    event = _ingested(ctx, digits)
    data = {**event.get_data(), "prefix": "datasets/digits/nope/"}
    from eventing.events import new_event
    from functions.contract import DATASET_INGESTED

    with pytest.raises(InvalidRequest, match="no complete data set"):
        featurize.handle(new_event(DATASET_INGESTED, "/t", data, cause=event), ctx)
