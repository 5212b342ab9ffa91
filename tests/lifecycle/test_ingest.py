"""Ingest: every raw format becomes a content-addressed data set version; bad data is refused with a reason and
leaves nothing behind."""

from __future__ import annotations

import gzip
import io
import json

import numpy as np
import pytest

from functions import ingest
from functions.contract import DATASET_INGESTED
from functions.ml.datasets import read_dataset
from functions.ml.readers import write_idx
from infra.errors import InvalidRequest, Unavailable
from tests.lifecycle.helpers import arrived, digits_csv, digits_npz, digits_parquet, keys, put_digits_idx


@pytest.mark.parametrize("fmt", ["csv", "npz", "parquet"])
def test_tabular_formats_ingest_to_one_content_addressed_version(ctx, digits, fmt):
    blob = {"csv": digits_csv, "npz": digits_npz, "parquet": digits_parquet}[fmt](digits)
    ctx.store.put(f"raw/digits/data.{fmt}", blob)
    out = ingest.handle(arrived(f"raw/digits/data.{fmt}", ctx.store), ctx)
    assert out.get_type() == DATASET_INGESTED
    data = out.get_data()
    assert data["dataset"] == "digits" and data["rows"] == 1797 and data["num_classes"] == 10
    assert data["prefix"] == f"datasets/digits/{data['version']}/"
    ds, summary = read_dataset(ctx.store, data["prefix"])
    assert ds.x.dtype == np.float32 and ds.x.shape == (1797, 64) and ds.y.dtype == np.int64
    np.testing.assert_array_equal(ds.y, digits.labels)
    assert summary["class_counts"] == np.bincount(digits.labels).tolist()
    assert summary["source"]["objects"][0]["key"] == f"raw/digits/data.{fmt}"


def test_same_content_in_two_formats_is_the_same_version(ctx, digits):
    ctx.store.put("raw/digits/a.csv", digits_csv(digits))
    ctx.store.put("raw/digits/b.parquet", digits_parquet(digits))
    first = ingest.handle(arrived("raw/digits/a.csv", ctx.store), ctx).get_data()
    second = ingest.handle(arrived("raw/digits/b.parquet", ctx.store), ctx).get_data()
    assert first["version"] == second["version"]
    assert len(keys(ctx.store, "datasets/")) == 3  # data.npz, schema.json, summary.json


@pytest.mark.parametrize("gz", [True, False])
def test_idx_pair_ingests_as_images(ctx, digits, gz):
    key = put_digits_idx(ctx.store, "raw/digits/train", digits, gz=gz)
    data = ingest.handle(arrived(key, ctx.store), ctx).get_data()
    assert data["kind"] == "image" and data["rows"] == 1797
    assert [o["key"] for o in data["source"]["objects"]] == [key, key.replace("images-idx3", "labels-idx1")]
    ds, _ = read_dataset(ctx.store, data["prefix"])
    assert ds.x.shape == (1797, 8, 8)


def test_idx_labels_arrival_alone_does_nothing(ctx, digits):
    images = put_digits_idx(ctx.store, "raw/digits/train", digits)
    labels = images.replace("images-idx3", "labels-idx1")
    assert ingest.handle(arrived(labels, ctx.store), ctx) is None
    assert keys(ctx.store, "datasets/") == []


def test_knflows_own_artifacts_are_not_ingested(ctx, digits):
    ctx.store.put("raw/digits/d.npz", digits_npz(digits))
    data = ingest.handle(arrived("raw/digits/d.npz", ctx.store), ctx).get_data()
    assert ingest.handle(arrived(data["data_key"], ctx.store), ctx) is None
    assert len(keys(ctx.store, "datasets/")) == 3


def test_idx_images_without_labels_is_retryable(ctx, digits):
    ctx.store.put("raw/digits/x-images-idx3-ubyte", write_idx(digits.images))
    with pytest.raises(Unavailable, match="labels"):
        ingest.handle(arrived("raw/digits/x-images-idx3-ubyte", ctx.store), ctx)


def test_run_options_come_from_the_event_or_the_dataset_file(ctx, digits):
    ctx.store.put("raw/digits/d.csv", digits_csv(digits, label="digit"))
    ctx.store.put("raw/digits/knflow.json", json.dumps({"label": "digit", "model_name": "dig"}).encode())
    event = arrived("raw/digits/d.csv", ctx.store)
    ingest.handle(event, ctx)
    run = json.loads(ctx.store.get(f"runs/{event.get_extension('runid')}/run.json"))
    assert run["label"] == "digit" and run["model_name"] == "dig"
    assert ingest.handle(arrived("raw/digits/knflow.json", ctx.store), ctx) is None


def _corrupt_idx(d):
    blob = bytearray(gzip.compress(write_idx(d.images)))
    blob[len(blob) // 2 : len(blob) // 2 + 64] = b"\x00" * 64
    return bytes(blob)


def _csv_missing_labels(d):
    lines = digits_csv(d).decode().splitlines()
    lines[5] = lines[5].rsplit(",", 1)[0] + ","
    return "\n".join(lines).encode()


def _npz_wrong_keys(d):
    buf = io.BytesIO()
    np.savez(buf, images=d.flat, targets=d.labels)
    return buf.getvalue()


BAD_INPUTS = {
    "corrupt-idx": ("raw/d/t-images-idx3-ubyte.gz", _corrupt_idx, "gzip|IDX"),
    "truncated-idx": ("raw/d/u-images-idx3-ubyte", lambda d: write_idx(d.images)[:-100], "IDX body"),
    "csv-missing-labels": ("raw/d/m.csv", _csv_missing_labels, "missing labels"),
    "csv-no-label-column": ("raw/d/n.csv", lambda d: digits_csv(d, label="target"), "no label column 'label'"),
    "csv-text-feature": ("raw/d/t.csv", lambda d: digits_csv(d).replace(b",0,", b",zero,", 1), "mixes numbers"),
    "npz-wrong-keys": ("raw/d/w.npz", _npz_wrong_keys, "needs arrays 'x' and 'y'"),
    "npz-not-zip": ("raw/d/z.npz", lambda d: b"PK\x03\x04garbage", "not a readable NPZ"),
    "empty-file": ("raw/d/e.csv", lambda d: b"", "empty"),
    "parquet-no-label": ("raw/d/p.parquet", lambda d: digits_parquet(d, label="target"), "no label column 'label'"),
    "too-few-rows": ("raw/d/f.csv", lambda d: b"\n".join(digits_csv(d).splitlines()[:6]), "at least 20"),
    "label-out-of-range": ("raw/d/r.npz", lambda d: _npz(d.flat, d.labels.astype(np.int64) - 1), "whole numbers"),
    "unknown-format": ("raw/d/x.json", lambda d: b"{}", "unsupported file type"),
}


def _npz(x, y):
    buf = io.BytesIO()
    np.savez(buf, x=x, y=y)
    return buf.getvalue()


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused_with_reason_and_nothing_half_written(ctx, digits, case):
    key, make, reason = BAD_INPUTS[case]
    if "idx3" in key:
        ctx.store.put(key.replace("images-idx3", "labels-idx1"), write_idx(digits.labels))
    ctx.store.put(key, make(digits))
    with pytest.raises(InvalidRequest, match=reason) as info:
        ingest.handle(arrived(key, ctx.store), ctx)
    assert key.split("/")[-1] in str(info.value)
    assert info.value.status == 400 and not info.value.retryable
    assert keys(ctx.store, "datasets/") == [] and keys(ctx.store, "runs/") == []


def test_ingest_and_refusal_on_both_store_backends(store, digits):
    """The same step on the file store and on a live S3 server: a version lands, a bad file leaves nothing."""
    from infra.settings import load_settings
    from tests.lifecycle.helpers import StepContext

    c = StepContext(store=store, settings=load_settings(env={}))
    store.put("raw/digits/d.parquet", digits_parquet(digits))
    data = ingest.handle(arrived("raw/digits/d.parquet", store), c).get_data()
    assert read_dataset(store, data["prefix"])[0].x.shape == (1797, 64)
    store.put("raw/bad/m.csv", _csv_missing_labels(digits))
    with pytest.raises(InvalidRequest, match="missing labels"):
        ingest.handle(arrived("raw/bad/m.csv", store), c)
    assert keys(store, "datasets/bad/") == []


@pytest.mark.parametrize(
    "options, reason",
    [
        ({"labels": "y"}, "unknown run options"),
        ({"train": {"epochs": "many"}}, "epochs"),
        ({"tuning": {"parameters": []}}, "no parameters"),
        ({"deploy": {"canary_percent": 500}}, "bad deploy policy"),
    ],
)
def test_bad_run_options_are_refused_at_ingest(ctx, digits, options, reason):
    ctx.store.put("raw/digits/d.npz", digits_npz(digits))
    with pytest.raises(InvalidRequest, match=reason):
        ingest.handle(arrived("raw/digits/d.npz", ctx.store, options=options), ctx)
    assert keys(ctx.store, "datasets/") == []
