"""The minio function: a KafkaSource's record holding a MinIO bucket notification becomes the lifecycle's
data.arrived in the broker, as knflow's own broker turns MinIO's webhook into it."""

from __future__ import annotations

import orjson

from eventing.bindings import to_http_binary
from eventing.broker import BrokerServer
from eventing.events import new_event
from functions.contract import DATA_ARRIVED
from tests.eventing.test_sources import minio_notification
from tests.functions.conftest import make_settings

KAFKA_EVENT = "dev.knative.kafka.event"  # what a KafkaSource sends, whatever the record holds


def _record(notification: object, pipeline: str | None = "lifecycle") -> object:
    """A KafkaSource's event for one record of MinIO's Kafka target: key ``bucket/key``, the document as data."""
    extensions = {"key": "knflow/raw/digits", **({"pipeline": pipeline} if pipeline else {})}
    source = "/apis/v1/namespaces/knflow/kafkasources/knflow-minio#minio"
    data = notification if isinstance(notification, bytes) else orjson.dumps(notification)
    return new_event(KAFKA_EVENT, source, data, subject="partition:0#7", datacontenttype=None, extensions=extensions)


async def _post(http, url: str, event) -> tuple[int, bytes]:
    headers, body = to_http_binary(event)
    async with http.post(url, data=body, headers=headers) as response:
        return response.status, await response.read()


async def _arrivals(http, broker_url: str, wait: int) -> list[dict]:
    async with http.get(f"{broker_url.rstrip('/')}/events?type={DATA_ARRIVED}&wait={wait}") as response:
        return (await response.json())["events"]


async def test_a_minio_notification_from_a_kafka_source_starts_a_run_of_its_pipeline(tmp_path, start_host, http):
    settings = make_settings(tmp_path, broker=f"embedded://{tmp_path / 'events'}")
    async with BrokerServer(settings, port=0) as broker:
        url = await start_host("minio", sink=broker.url)
        assert (await _post(http, url, _record(minio_notification("knflow", "models/m/1/model.onnx"))))[0] == 204
        status, _ = await _post(http, url, _record(minio_notification("knflow", "raw/digits/my+file%281%29.csv")))
        assert status == 204
        status, _ = await _post(http, url, _record(minio_notification("knflow", "raw/other/x.csv"), "nightly"))
        assert status == 204
        events = await _arrivals(http, broker.url, 10)
    assert [(e["data"]["key"], e["pipeline"]) for e in events] == [
        ("raw/digits/my file(1).csv", "lifecycle"),  # MinIO URL-encodes keys; only raw/ objects start runs
        ("raw/other/x.csv", "nightly"),
    ]
    assert events[0]["data"]["size"] == 42 and events[0]["data"]["bucket"] == "knflow"


async def test_a_record_that_is_not_a_minio_notification_is_refused_naming_why(tmp_path, start_host, http):
    url = await start_host("minio", sink="http://127.0.0.1:9/")  # nothing may be emitted
    status, body = await _post(http, url, _record(b"not json"))
    assert status == 400 and b"is not JSON, so not a MinIO notification" in body
    status, body = await _post(http, url, _record({"Key": "knflow/raw/x.csv"}))
    assert status == 400 and b"not a MinIO bucket notification: expected a JSON object with Records" in body
