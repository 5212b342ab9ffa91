"""Data as users have it, through the real platform: a CSV lands, the served model answers over the gateway's V2 API.

Iris with class names answers class names; diabetes deploys as a regression by a policy that minimizes rmse and
answers predictions that score what the trained model scored; a table with categorical columns takes raw values,
an unknown category included.
"""

from __future__ import annotations

import orjson
import pytest
import urllib3

from infra.store import ArtifactStore, open_store
from knflow.drive import RunOutcome, held_out_categories, held_out_split, probe, submit, watch
from knflow.platform import Platform
from tests.lifecycle.tables import IRIS_CLASSES, SMALL, diabetes_csv, iris_csv, shop_csv

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(platform: Platform) -> ArtifactStore:
    return open_store(platform.settings.artifacts)


def _run(platform: Platform, store: ArtifactStore, dataset: str, filename: str, blob: bytes, options: dict):
    key = submit(store, dataset, filename, blob, options)
    outcome = watch(platform.history(), key, timeout=400, store=store)
    assert outcome.failure is None, outcome.failure.data if outcome.failure else None
    assert outcome.registered is not None
    return outcome


def _probe(platform: Platform, store: ArtifactStore, outcome: RunOutcome):
    features = outcome.features or {}
    x, y = held_out_split(store, features)
    c = held_out_categories(store, features)
    name = (outcome.registered or {})["name"]
    gateway, registered = platform.url("gateway"), outcome.registered
    return probe(gateway, name, x, y, requests=len(y), c=c, registered=registered, headers=platform.headers), y


def _infer(platform: Platform, model: str, inputs: list[dict]) -> dict[str, dict]:
    answer = urllib3.request(
        "POST",
        f"{platform.url('gateway')}/v2/models/{model}/infer",
        body=orjson.dumps({"inputs": inputs}),
        headers={"content-type": "application/json"},
    )
    assert answer.status == 200, answer.data
    return {o["name"]: o for o in orjson.loads(answer.data)["outputs"]}


def test_iris_with_class_names_is_served_answering_class_names(platform: Platform, store: ArtifactStore) -> None:
    options = {"label": "species", "model_name": "iris", "train": SMALL}
    outcome = _run(platform, store, "iris", "iris.csv", iris_csv(), options)
    registered = outcome.registered or {}
    assert registered["classes"] == list(IRIS_CLASSES) and outcome.deployed is not None

    result, y = _probe(platform, store, outcome)
    assert set(result.answers) <= set(IRIS_CLASSES)
    assert result.accuracy >= 0.9 and result.correct == pytest.approx(registered["metrics"]["test_accuracy"] * len(y))

    outputs = _infer(platform, "iris", [{"name": "input", "datatype": "FP32", "shape": [2, 4], "data": [
        5.1, 3.5, 1.4, 0.2,  # a setosa from the data set
        6.9, 3.1, 5.4, 2.1,  # a virginica
    ]}])  # fmt: skip
    assert outputs["label"]["datatype"] == "BYTES" and outputs["label"]["data"] == ["setosa", "virginica"]
    assert outputs["probabilities"]["shape"] == [2, 3]


@pytest.mark.timeout(900)
def test_diabetes_deploys_by_rmse_minimized_and_serves_the_trained_models_predictions(
    platform: Platform, store: ArtifactStore
) -> None:
    policy = {"metric": "test_rmse", "maximize": False}
    options = {"label": "progression", "task": "regression", "model_name": "diabetes", "train": SMALL}
    outcome = _run(platform, store, "diabetes", "diabetes.csv", diabetes_csv(), {**options, "deploy": policy})
    registered = outcome.registered or {}
    assert registered["task"] == "regression" and outcome.deployed is not None
    assert outcome.deployed["traffic_percent"] == 100

    result, y = _probe(platform, store, outcome)
    assert result.rmse == pytest.approx(registered["metrics"]["test_rmse"], rel=1e-3)
    assert result.rmse < float(y.std())

    # A worse model (lower-is-better rmse is higher) is not deployed, on the defaults of a regression run alone.
    worse = {**options, "train": {**SMALL, "epochs": 2, "lr": 1e-4}}
    second = _run(platform, store, "diabetes", "diabetes-2.csv", diabetes_csv(), worse)
    assert second.deployed is None and second.declined is not None
    assert second.declined.startswith("test_rmse") and "does not beat production" in second.declined


def test_a_table_with_categorical_columns_is_served_raw_values(platform: Platform, store: ArtifactStore) -> None:
    outcome = _run(platform, store, "shop", "shop.csv", shop_csv(), {"label": "decision", "train": SMALL})
    registered = outcome.registered or {}
    assert [s["name"] for s in registered["signature"]["inputs"]] == ["size", "color", "shape"]

    result, _ = _probe(platform, store, outcome)
    assert result.accuracy >= 0.85

    outputs = _infer(platform, registered["name"], [
        {"name": "size", "datatype": "FP32", "shape": [3, 1], "data": [6.0, 14.0, 6.0]},
        {"name": "color", "datatype": "BYTES", "shape": [3, 1], "data": ["red", "red", "purple"]},
        {"name": "shape", "datatype": "BYTES", "shape": [3, 1], "data": ["circle", "square", "hexagon"]},
    ])  # fmt: skip
    assert outputs["label"]["data"][:2] == ["keep", "drop"]  # an unknown color and shape still get an answer
    assert outputs["label"]["data"][2] in ("drop", "keep")
