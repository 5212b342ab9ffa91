"""Sources: MinIO notifications (webhook and Kafka target), file-store arrival across processes, HMAC webhook, ping."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import pytest
from kafka import KafkaProducer

from eventing.sources.filestore import FileStoreWatcher
from eventing.sources.ping import PING_TYPE
from eventing.sources.webhook import SIGNATURE_HEADER, sign
from eventing.triggers import Trigger
from functions.contract import DATA_ARRIVED
from infra.settings import EventingSettings
from infra.store_file import FileStore
from tests.eventually import eventually


@pytest.fixture
def backend() -> str:
    return "embedded"  # sources sit above the log; the log backends are covered by test_delivery


def minio_notification(bucket: str, encoded_key: str, size: int = 42, etag: str = "abc123") -> dict:
    """What MinIO sends for a PUT (trimmed to the fields it always has)."""
    return {
        "EventName": "s3:ObjectCreated:Put",
        "Key": f"{bucket}/{encoded_key}",
        "Records": [
            {
                "eventVersion": "2.0",
                "eventSource": "minio:s3",
                "eventTime": "2026-01-01T00:00:00.000Z",
                "eventName": "s3:ObjectCreated:Put",
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {"key": encoded_key, "size": size, "eTag": etag, "sequencer": "17A"},
                },
            }
        ],
    }


def arrivals(subscriber) -> Trigger:
    return Trigger(
        "arrivals", subscriber.on("/arrived", lambda e, n: aiohttp.web.Response()), filter={"type": DATA_ARRIVED}
    )


async def test_minio_webhook_notification_becomes_data_arrived(make_broker, subscriber):
    async with make_broker([arrivals(subscriber)], sources=None, KNFLOW_EVENTING_MINIO_TOKEN="tok") as broker:
        body = orjson.dumps(minio_notification("knflow", "raw/digits/my+file%281%29.csv"))
        async with aiohttp.ClientSession() as s:
            async with s.post(broker.url + "/sources/minio", data=body) as r:
                assert r.status == 401
            auth = {"Authorization": "Bearer tok"}
            other = orjson.dumps(minio_notification("knflow", "models/m/1/model.onnx"))
            async with s.post(broker.url + "/sources/minio", data=other, headers=auth) as r:
                assert r.status == 200  # not under raw/: no run
            async with s.post(broker.url + "/sources/minio", data=body, headers=auth) as r:
                assert r.status == 202
        await subscriber.wait_for(lambda: subscriber.at("/arrived"), 10)
    event = subscriber.at("/arrived")[0].event
    assert event.get_data() == {
        "bucket": "knflow",
        "key": "raw/digits/my file(1).csv",
        "size": 42,
        "etag": "abc123",
        "store": "s3://knflow",
    }
    assert event.get_subject() == "raw/digits/my file(1).csv"
    assert event.get_extension("runid").startswith("run-")
    assert len(subscriber.at("/arrived")) == 1


async def test_minio_kafka_target_notification_becomes_data_arrived(make_broker, subscriber, kafka_server):
    topic = f"minio-events-{int(time.time() * 1000)}"
    producer = KafkaProducer(bootstrap_servers=[kafka_server.url])
    producer.send(
        topic, key=b"knflow/raw/iris/a%20b.csv", value=orjson.dumps(minio_notification("knflow", "raw/iris/a%20b.csv"))
    )
    producer.flush()
    producer.close()
    extra = {"KNFLOW_EVENTING_MINIO_KAFKA_TOPIC": topic, "KNFLOW_EVENTING_MINIO_KAFKA_SERVERS": kafka_server.url}
    async with make_broker([arrivals(subscriber)], sources=None, **extra):
        await subscriber.wait_for(lambda: subscriber.at("/arrived"), 30)
    assert subscriber.at("/arrived")[0].event.get_data()["key"] == "raw/iris/a b.csv"


async def test_file_store_raw_arrival_is_seen_across_processes(make_broker, subscriber, tmp_path: Path):
    artifacts = tmp_path / "artifacts"
    extra = {"KNFLOW_EVENTING_WATCH_INTERVAL_S": "0.2"}
    async with make_broker([arrivals(subscriber)], sources=None, **extra):
        script = (
            "from infra.store_file import FileStore; from pathlib import Path; import sys;"
            "s = FileStore(Path(sys.argv[1])); s.put('raw/iris/data.csv', b'a,b\\n1,2\\n'); s.put('datasets/x/y', b'z')"
        )
        subprocess.run([sys.executable, "-c", script, str(artifacts)], check=True, cwd=Path.cwd())
        await subscriber.wait_for(lambda: subscriber.at("/arrived"), 10)
    data = subscriber.at("/arrived")[0].event.get_data()
    assert data["key"] == "raw/iris/data.csv" and data["size"] == 8
    assert data["store"] == f"file://{artifacts.resolve()}"
    async with make_broker([arrivals(subscriber)], sources=None, **extra):  # a restart does not announce it again
        FileStore(artifacts).put("raw/iris/more.csv", b"1")
        await subscriber.wait_for(lambda: len(subscriber.at("/arrived")) == 2, 10)
    assert [r.event.get_data()["key"] for r in subscriber.at("/arrived")] == ["raw/iris/data.csv", "raw/iris/more.csv"]


async def test_file_store_put_in_process_wakes_the_watcher(tmp_path: Path):
    published = []

    async def publish(event):
        published.append(event)

    config = EventingSettings(
        arrival_type="test.arrived", arrival_prefix="raw/", arrival_pipeline="p", watch_interval_s=60
    )
    watcher = FileStoreWatcher(tmp_path / "a", tmp_path / "seen.json", config)
    store = FileStore(tmp_path / "a")
    watcher.attach(store)
    await watcher.start(publish)
    try:
        await watcher.scan(publish)
        store.put("raw/d/f.csv", b"x")
        await eventually(lambda: published, 5, "the watcher to announce the put")
    finally:
        await watcher.stop()
    assert [e.get_data()["key"] for e in published] == ["raw/d/f.csv"]
    assert (published[0].get_type(), published[0].get_extension("pipeline")) == ("test.arrived", "p")


async def test_signed_webhook_is_accepted_and_unsigned_replayed_or_stale_ones_are_401(make_broker, subscriber):
    secret = "s3cret"
    trigger = Trigger(
        "hooks", subscriber.on("/hook", lambda e, n: aiohttp.web.Response()), filter={"type": "dev.test.hook"}
    )
    extra = {"KNFLOW_EVENTING_WEBHOOK_SECRET": secret, "KNFLOW_EVENTING_WEBHOOK_TYPE": "dev.test.hook"}
    async with make_broker([trigger], sources=None, **extra) as broker, aiohttp.ClientSession() as s:
        url = broker.url + "/sources/webhook"
        body = orjson.dumps({"dataset": "iris"})
        good = sign(secret, body)
        cases = [
            ({}, 401),
            ({SIGNATURE_HEADER: sign("wrong", body)}, 401),
            ({SIGNATURE_HEADER: sign(secret, body, time.time() - 3600)}, 401),
            ({SIGNATURE_HEADER: good}, 202),
            ({SIGNATURE_HEADER: good}, 401),  # replay
        ]
        for headers, status in cases:
            async with s.post(url, data=body, headers=headers) as r:
                assert r.status == status, (headers, await r.text())
        tampered = orjson.dumps({"dataset": "evil"})
        async with s.post(url, data=tampered, headers={SIGNATURE_HEADER: sign(secret, body)}) as r:
            assert r.status == 401
        await subscriber.wait_for(lambda: subscriber.at("/hook"), 10)
    assert [r.event.get_data() for r in subscriber.at("/hook")] == [{"dataset": "iris"}]


async def test_ping_source_emits_on_its_schedule(make_broker, subscriber):
    trigger = Trigger("pings", subscriber.on("/ping", lambda e, n: aiohttp.web.Response()), filter={"type": PING_TYPE})
    extra = {"KNFLOW_EVENTING_PING_SCHEDULE": "* * * * * *", "KNFLOW_EVENTING_PING_DATA": '{"hello": "world"}'}
    async with make_broker([trigger], sources=None, **extra):
        await subscriber.wait_for(lambda: len(subscriber.at("/ping")) >= 2, 10)
    pings = subscriber.at("/ping")
    assert pings[0].event.get_data() == {"hello": "world"}
    assert 0.7 <= pings[1].at - pings[0].at <= 1.5
