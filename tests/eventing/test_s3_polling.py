"""The S3 polling source on a live S3 server (SeaweedFS, which sends no notifications): objects put by other tools
start a run once, across broker restarts; objects the knflow server announced, options files and a MinIO
notification of the same object start none more; an S3 server that fails is retried and logged at a bounded rate."""

from __future__ import annotations

import io
import itertools
import logging
from collections.abc import Callable
from pathlib import Path

import aiohttp
import orjson
import pytest
from minio import Minio

from eventing.broker import BrokerServer
from eventing.sources import s3_marker_path
from eventing.sources.arrival import ANNOUNCED
from eventing.sources.marker import ArrivalMarker
from eventing.sources.s3poll import FailureLog, S3PollingSource
from functions.contract import DATA_ARRIVED, with_lifecycle
from infra.errors import ConfigError
from infra.localservices import LocalService
from infra.settings import Settings, load_settings
from infra.store import open_store
from tests.eventing.test_sources import minio_notification
from tests.eventually import eventually
from tests.unguarded import UNGUARDED

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "knflow", "AWS_SECRET_ACCESS_KEY": "knflow-secret"}
_buckets = itertools.count()


@pytest.fixture
def bucket(s3_server: LocalService) -> str:
    name = f"knflow-poll-{next(_buckets)}"
    minio_client(s3_server).make_bucket(name)
    return name


def minio_client(s3_server: LocalService) -> Minio:
    """The plain ``minio`` client, as another tool that puts data into the bucket would use it."""
    endpoint = s3_server.url.split("://", 1)[1]
    return Minio(endpoint, access_key="knflow", secret_key="knflow-secret", secure=False)


def put(client: Minio, bucket: str, key: str, data: bytes = b"a,label\n1,0\n", **metadata: str) -> str:
    """Put an object with the plain client; its ETag."""
    return client.put_object(bucket, key, io.BytesIO(data), len(data), metadata=metadata or None).etag


@pytest.fixture
def make_settings(tmp_path: Path, s3_server: LocalService) -> Callable[..., Settings]:
    def make(bucket: str, **eventing: str) -> Settings:
        env = {
            **CREDENTIALS,
            "KNFLOW_DATA_DIR": str(tmp_path / "data"),
            "KNFLOW_BROKER": f"embedded://{tmp_path / 'events'}",
            "KNFLOW_ARTIFACTS": f"s3://{bucket}?endpoint={s3_server.url}",
            "KNFLOW_EVENTING_S3_POLL_INTERVAL_S": "0.1",
            **{f"KNFLOW_EVENTING_{k.upper()}": v for k, v in eventing.items()},
            **UNGUARDED,
        }
        return with_lifecycle(load_settings(env, config_file=None))

    return make


async def call(method: str, url: str, **kwargs) -> tuple[int, dict]:
    """One HTTP call: its status and JSON body."""
    async with aiohttp.ClientSession() as session, session.request(method, url, **kwargs) as answer:
        return answer.status, await answer.json(content_type=None)


async def arrivals(broker: BrokerServer) -> list[dict]:
    """Every data.arrived event in the broker's history (structured JSON), in order."""
    return (await call("GET", f"{broker.url}/events", params={"type": DATA_ARRIVED, "limit": "1000"}))[1]["events"]


async def arrived_keys(broker: BrokerServer) -> list[str]:
    """The keys of every data.arrived event in the broker's history, in order."""
    return [e["data"]["key"] for e in await arrivals(broker)]


async def announced(broker: BrokerServer, key: str, timeout: float = 20.0) -> list[str]:
    """Wait until ``key`` has been announced; every key announced by then."""
    return await eventually(
        lambda: _holding(arrived_keys(broker), key), timeout, f"the arrival of {key} in {broker.url}"
    )


async def _holding(keys, key: str) -> list[str] | None:
    found = await keys
    return found if key in found else None


def poller(broker: BrokerServer) -> S3PollingSource:
    return next(s for s in broker._sources or () if isinstance(s, S3PollingSource))


async def test_objects_put_by_other_tools_are_announced_once_across_broker_restarts(make_settings, bucket, s3_server):
    client = minio_client(s3_server)
    put(client, bucket, "raw/iris/before.csv")  # there before the first start: taken as seen, not announced
    settings = make_settings(bucket)
    async with BrokerServer(settings, port=0) as broker:
        await eventually(lambda: s3_marker_path(settings).is_file(), 20, "the first listing to be recorded")
        put(client, bucket, "raw/iris/first.csv")
        await announced(broker, "raw/iris/first.csv")
    put(client, bucket, "raw/iris/while-down.csv")  # put while no broker runs: announced after the restart
    async with BrokerServer(settings, port=0) as broker:
        keys = await announced(broker, "raw/iris/while-down.csv")
        # first.csv was in the same listing as while-down.csv: had the restart forgotten it, it would be here twice
        assert keys == ["raw/iris/first.csv", "raw/iris/while-down.csv"]
        event = (await arrivals(broker))[0]
    assert event["source"] == f"knflow/s3poll/{bucket}"
    assert event["data"]["store"] == settings.artifacts.url and event["pipeline"] == "lifecycle"
    assert event["data"]["etag"] == client.stat_object(bucket, "raw/iris/first.csv").etag


async def test_objects_the_knflow_server_announced_and_options_files_start_no_run(make_settings, bucket, s3_server):
    settings = make_settings(bucket)
    client = minio_client(s3_server)
    async with BrokerServer(settings, port=0) as broker:
        await eventually(lambda: s3_marker_path(settings).is_file(), 20, "the first listing to be recorded")
        store = open_store(settings.artifacts)
        store.put("raw/iris/submitted.csv", b"a,label\n1,0\n", metadata={ANNOUNCED: "run-1"})  # as the server does
        put(client, bucket, "raw/iris/knflow.json", b'{"label": "label"}')
        put(client, bucket, "raw/iris/dropped.csv")
        polled, etag = poller(broker), store.stat("raw/iris/submitted.csv").etag
        # a scan goes through the listing in key order, announcing or recording each: once it has recorded the
        # last key (submitted.csv), every announcement of that scan is in the broker
        await eventually(lambda: not polled.marker.is_new("raw/iris/submitted.csv", etag, 1e12), 20, "the scan")
        assert await announced(broker, "raw/iris/dropped.csv") == ["raw/iris/dropped.csv"]


async def test_a_minio_notification_and_the_poll_announce_an_object_once(make_settings, bucket, s3_server):
    settings = make_settings(bucket, S3_ARRIVALS="both")
    client = minio_client(s3_server)
    async with BrokerServer(settings, port=0) as broker:
        await eventually(lambda: s3_marker_path(settings).is_file(), 20, "the first listing to be recorded")
        etag = put(client, bucket, "raw/iris/both.csv")
        note = minio_notification(bucket, "raw/iris/both.csv", etag=etag)
        status, _ = await call("POST", f"{broker.url}/sources/minio", data=orjson.dumps(note))
        assert status in (200, 202)  # 200: the poll was first
        put(client, bucket, "raw/iris/later.csv")
        assert await announced(broker, "raw/iris/later.csv") == ["raw/iris/both.csv", "raw/iris/later.csv"]


async def test_poll_mode_takes_no_minio_notifications(make_settings, bucket):
    async with BrokerServer(make_settings(bucket, S3_ARRIVALS="poll"), port=0) as broker:
        body = orjson.dumps(minio_notification(bucket, "raw/iris/x.csv"))
        status, answer = await call("POST", f"{broker.url}/sources/minio", data=body)
        assert status == 404 and "eventing.s3_arrivals = poll" in answer["error"]
        assert poller(broker)


async def test_notifications_mode_does_not_poll(make_settings, bucket):
    async with BrokerServer(make_settings(bucket, S3_ARRIVALS="notifications"), port=0) as broker:
        assert not [s for s in broker._sources or () if isinstance(s, S3PollingSource)]


async def test_a_failing_s3_server_is_retried_logged_at_a_bounded_rate_and_the_broker_keeps_serving(
    make_settings, s3_server, caplog
):
    name = f"knflow-poll-late-{next(_buckets)}"  # no such bucket yet: every listing fails
    settings = make_settings(name)
    caplog.set_level(logging.INFO, logger="eventing.sources.s3poll")
    async with BrokerServer(settings, port=0) as broker:
        polled = poller(broker)
        await eventually(lambda: polled.failures.failures >= 3, 20, "three failed listings")
        assert (await call("GET", f"{broker.url}/health"))[0] == 200
        failed = [r for r in caplog.records if "failed" in r.getMessage()]
        assert len(failed) == 1 and "does not exist" in failed[0].getMessage()
        client = minio_client(s3_server)
        client.make_bucket(name)  # the server can answer now: the source recovers and starts announcing
        await eventually(lambda: s3_marker_path(settings).is_file(), 90, "the first listing after recovering")
        put(client, name, "raw/iris/after.csv")
        await announced(broker, "raw/iris/after.csv")
    assert any("works again" in r.getMessage() for r in caplog.records)


def test_failure_log_reports_at_most_once_per_period_with_the_count(caplog) -> None:
    caplog.set_level(logging.INFO, logger="eventing.sources.s3poll")
    failures = FailureLog("polling s3://b raw/", every_s=3600)
    for _ in range(50):
        failures.failed(ConnectionRefusedError("connection refused"))
    failures.succeeded()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "polling s3://b raw/ failed: connection refused; retrying",
        "polling s3://b raw/ works again after 50 failure(s)",
    ]


def test_the_marker_is_bounded_to_the_newest_versions(tmp_path: Path) -> None:
    marker = ArrivalMarker(tmp_path / "seen.json", max_keys=3)
    marker.start()
    for i in range(5):
        assert marker.claim(f"raw/d/{i}.csv", f"etag{i}", modified=1000.0 + i)
    marker.save()
    again = ArrivalMarker.load(tmp_path / "seen.json", max_keys=3)
    assert len(again) == 3 and again.started
    assert not again.is_new("raw/d/0.csv", "etag0", 1000.0)  # forgotten, but older than the horizon: still seen
    assert not again.is_new("raw/d/4.csv", "etag4", 1004.0)
    assert again.is_new("raw/d/4.csv", "etag4-overwritten", 1010.0)
    assert again.is_new("raw/d/new.csv", "e", 1005.0)


def test_an_unknown_s3_arrivals_value_is_refused_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="KNFLOW_EVENTING_S3_ARRIVALS='webhook': expected poll, notifications, both"):
        load_settings({"KNFLOW_DATA_DIR": str(tmp_path), "KNFLOW_EVENTING_S3_ARRIVALS": "webhook"}, config_file=None)
