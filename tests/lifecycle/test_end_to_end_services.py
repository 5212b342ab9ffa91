"""The same lifecycle on the real-services setup: Kafka (tansu) for events, S3 (SeaweedFS) for artifacts.

Nothing but configuration changes from the embedded run: the platform's processes get
``KNFLOW_BROKER=kafka://…`` and ``KNFLOW_ARTIFACTS=s3://…``. Data arrives the way MinIO announces it (a bucket
notification, MinIO's webhook-target JSON, posted to the broker; the broker takes only notifications here,
``eventing.s3_arrivals = notifications``, so the run is the notification's) or through ``knflow.Client``, whose
knflow server announces it itself (SeaweedFS sends no notifications). The broker's polling source, which announces
objects on servers that send none, has its own tests (``tests/eventing/test_s3_polling.py``,
``test_readme_s3_path.py``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from urllib.parse import quote

import orjson
import pytest
import urllib3
from sklearn.datasets import load_iris

from eventing.sources.arrival import ANNOUNCED
from functions import contract
from infra.localservices import LocalService, free_platform_ports
from infra.settings import load_settings
from infra.store import ArtifactStore, ObjectInfo, open_store
from knflow import Client
from knflow.commands.demo import digits_npz
from knflow.drive import held_out_split, probe, submit, watch
from knflow.platform import Platform

pytestmark = pytest.mark.slow

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "knflow", "AWS_SECRET_ACCESS_KEY": "knflow-secret"}
BUCKET = "knflow-e2e"


@pytest.fixture(scope="module")
def platform(
    tmp_path_factory: pytest.TempPathFactory, s3_server: LocalService, kafka_server: LocalService
) -> Iterator[Platform]:
    data = tmp_path_factory.mktemp("platform-services")
    (data / "knflow.toml").write_text("")
    env = {
        **CREDENTIALS,
        "KNFLOW_DATA_DIR": str(data),
        "KNFLOW_BROKER": f"kafka://{kafka_server.url}?topic=knflow-e2e",
        "KNFLOW_ARTIFACTS": f"s3://{BUCKET}?endpoint={s3_server.url}&create=true",
        "KNFLOW_EVENTING_S3_ARRIVALS": "notifications",
        **free_platform_ports(),
    }
    settings = load_settings(env, config_file=data / "knflow.toml")
    open_store(settings.artifacts)  # creates the bucket, as an operator would before starting
    with Platform.start(settings, extra_env=CREDENTIALS, timeout=120) as running:
        yield running


@pytest.fixture(scope="module")
def store(platform: Platform) -> ArtifactStore:
    return open_store(platform.settings.artifacts)


def minio_notification(bucket: str, info: ObjectInfo) -> bytes:
    """The JSON MinIO's webhook target sends for a new object (the object key URL-encoded)."""
    return orjson.dumps(
        {
            "EventName": "s3:ObjectCreated:Put",
            "Key": f"{bucket}/{info.key}",
            "Records": [
                {
                    "eventVersion": "2.0",
                    "eventSource": "minio:s3",
                    "awsRegion": "",
                    "eventTime": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
                    "eventName": "s3:ObjectCreated:Put",
                    "s3": {
                        "s3SchemaVersion": "1.0",
                        "bucket": {"name": bucket},
                        "object": {
                            "key": quote(info.key, safe=""),
                            "size": info.size,
                            "eTag": info.etag,
                            "contentType": "application/octet-stream",
                            "sequencer": "17E0A1B2C3D4E5F6",
                        },
                    },
                }
            ],
        }
    )


def test_kafka_and_s3_carry_a_run_from_bucket_notification_to_a_serving_model(
    platform: Platform, store: ArtifactStore
) -> None:
    options = {"model_name": "digits-s3", "train": {"model": "mlp", "epochs": 12}}
    key = submit(store, "digits", "digits-s3.npz", digits_npz(), options)
    answer = urllib3.request(
        "POST",
        f"{platform.url('broker')}/sources/minio",
        body=minio_notification(BUCKET, store.stat(key)),
        headers={"content-type": "application/json"},
    )
    assert answer.status == 202, answer.data

    outcome = watch(platform.history(), key, timeout=300)
    assert outcome.failure is None, outcome.failure.data if outcome.failure else None
    types = [e.type for e in outcome.events]
    for expected in (
        contract.DATA_ARRIVED,
        contract.DATASET_INGESTED,
        contract.FEATURES_READY,
        contract.MODEL_TRAINED,
        contract.MODEL_REGISTERED,
        contract.MODEL_DEPLOYED,
    ):
        assert expected in types
    assert outcome.events[0].data["bucket"] == BUCKET
    registered = outcome.registered or {}
    assert registered["metrics"]["test_accuracy"] >= 0.95
    assert store.stat(registered["onnx_key"]).sha256 == registered["sha256"]  # the model lives in S3

    x, y = held_out_split(store, outcome.features or {})
    result = probe(platform.url("gateway"), "digits-s3", x, y, requests=100, headers=platform.headers)
    assert result.accuracy >= 0.9


def test_client_submits_to_the_platform_on_kafka_and_s3_and_the_run_reaches_a_served_model(
    platform: Platform, store: ArtifactStore
) -> None:
    x, y = load_iris(return_X_y=True)
    client = Client.from_settings(platform.settings)

    run = client.submit(
        (x, y), dataset="iris", options={"model_name": "iris-s3", "train": {"model": "mlp", "epochs": 5}}
    )
    outcome = run.wait(timeout=300)

    assert outcome.status == "deployed", outcome.summary()
    assert outcome.events[0].data["bucket"] == BUCKET and outcome.events[0].data["key"] == run.key
    # The data lives in S3, marked as announced by the knflow server: no bucket notification was needed.
    assert store.stat(run.key).metadata.get(ANNOUNCED) == run.runid
    registered = outcome.registered or {}
    assert store.stat(registered["onnx_key"]).sha256 == registered["sha256"]
    answer = run.infer(x[:20])
    assert answer["probabilities"].shape == (20, 3)
    assert client.run(run.runid).outcome()["endpoint"] == outcome.endpoint


def test_a_notification_that_is_not_minio_json_is_refused(platform: Platform) -> None:
    answer = urllib3.request(
        "POST",
        f"{platform.url('broker')}/sources/minio",
        body=b'{"hello": 1}',
        headers={"content-type": "application/json"},
    )
    assert answer.status == 400
    assert b"Records" in answer.data
