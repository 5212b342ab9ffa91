"""Inference logging: sampled requests and responses become KServe inference-logger CloudEvents in the broker (a real
in-process BrokerServer), the request path never waits for the broker, and a full queue drops and counts."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import orjson
import pytest
from aiohttp import ClientSession

from eventing.broker import BrokerServer
from eventing.events import new_traceparent
from infra.settings import load_settings
from serving.gateway import Gateway
from serving.logevents import INFERENCE_REQUEST, INFERENCE_RESPONSE
from serving.logger import QUEUE_FULL, TOO_LARGE, InferenceLogger, LogSpec
from serving.registry import ModelRegistry
from serving.revisions import Revision
from tests.eventually import eventually
from tests.scrape import parse, value
from tests.serving.helpers import infer_body, mlp_onnx

RUN = {"runid": "run-0123456789abcdef", "pipeline": "lifecycle"}


def revision(rate: float = 1.0, mode: str = "all") -> Revision:
    return Revision("digits-00001", "digits", 1, logger=LogSpec(mode, rate, dict(RUN)))


def logger(**kw: object) -> InferenceLogger:
    options = {"queue_limit": 1000, "queue_bytes": 1 << 20, "max_event_bytes": 1 << 20, **kw}
    return InferenceLogger("http://127.0.0.1:9/", **options)  # type: ignore[arg-type]


HEADERS = {"content-type": "application/json"}


# -- sampling and the bounded queue (no broker needed) --------------------------------------------------------------


def test_a_revision_logs_its_sample_rate_of_answered_requests() -> None:
    log = logger(sample=random.Random(0).random)
    for _ in range(4000):
        log.log(revision(0.25), HEADERS, b"{}", 200, b"{}")
    assert 900 <= len(log._queue) <= 1100  # 25 % of 4000, seeded
    everything, nothing = logger(), logger()
    for _ in range(100):
        everything.log(revision(1.0), HEADERS, b"{}", 200, b"{}")
        nothing.log(revision(0.0), HEADERS, b"{}", 200, b"{}")
    assert (len(everything._queue), len(nothing._queue)) == (100, 0)


def test_unlogged_revisions_and_failed_requests_are_not_logged() -> None:
    log = logger()
    log.log(Revision("digits-00001", "digits", 1), HEADERS, b"{}", 200, b"{}")
    for status in (400, 404, 503):
        log.log(revision(), HEADERS, b"{}", status, b'{"error": "x"}')
    assert not log._queue


def test_a_full_queue_drops_and_counts_and_says_so_at_a_bounded_rate(caplog: pytest.LogCaptureFixture) -> None:
    log = logger(queue_limit=5)
    with caplog.at_level(logging.WARNING, logger="serving.logger"):
        for _ in range(1000):
            log.log(revision(), HEADERS, b"{}", 200, b"{}")
    assert len(log._queue) == 5
    assert log.dropped[("digits-00001", QUEUE_FULL)] == 995 * 2  # a request and its response each
    assert len([r for r in caplog.records if "dropped" in r.message]) == 1
    samples = parse(log.metrics_text())
    assert value(samples, "knflow_inference_log_dropped_total", revision="digits-00001", reason="queue_full") == 1990
    assert value(samples, "knflow_inference_log_queued") == 5


def test_the_queue_is_bounded_in_bytes_too_and_an_event_above_the_broker_limit_is_dropped() -> None:
    log = logger(queue_bytes=10_000, max_event_bytes=50_000)
    big = b'{"inputs": "' + b"x" * 4000 + b'"}'
    for _ in range(5):
        log.log(revision(mode="request"), HEADERS, big, 200, b"{}")
    assert len(log._queue) == 2 and log.dropped[("digits-00001", QUEUE_FULL)] == 3
    log.log(revision(), HEADERS, b"{" + b" " * 60_000 + b"}", 200, b"{}")
    assert log.dropped[("digits-00001", TOO_LARGE)] == 2


async def test_batches_stay_within_the_broker_limit_and_carry_every_event_once() -> None:
    log = logger(max_event_bytes=200_000)
    big = b'{"x": "' + b"a" * 60_000 + b'"}'
    for i in range(50):
        log.log(revision(), {**HEADERS, "ce-id": f"r{i}"}, big if i % 3 == 0 else b"{}", 200, b"{}")
    seen = []
    while log._queue:
        body, count, counts = await log._batch()
        assert len(body) <= 200_000 and count == sum(counts.values())
        seen += [e["id"] for e in orjson.loads(body)]
    assert sorted(seen) == sorted(f"r{i}" for i in range(50) for _ in range(2))  # a request and its response each


# -- the events, through a real broker ------------------------------------------------------------------------------


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[BrokerServer]:
    settings = load_settings(env={"KNFLOW_DATA_DIR": str(tmp_path / "broker")})
    async with BrokerServer(settings, [], sources=[], port=0) as server:
        yield server


async def stored(broker: BrokerServer, type_: str | None = None) -> list:
    events, _ = await broker.log.history(after=None, limit=1000, runid=RUN["runid"], type=type_)
    return [e for _, e in events]


async def test_events_are_kserve_logger_events_sharing_the_request_id(broker: BrokerServer) -> None:
    log = logger()
    log.broker_url = broker.url + "/"
    await log.start("http://127.0.0.1:8182")
    trace = new_traceparent()
    request = {"id": "r1", "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [0.5, 1.5]}]}
    response = {"model_name": "digits", "outputs": [{"name": "p", "datatype": "FP32", "shape": [1], "data": [1.0]}]}
    headers = {**HEADERS, "ce-id": "req-42", "traceparent": trace, "inference-header-content-length": "7"}
    log.log(revision(), headers, orjson.dumps(request), 200, orjson.dumps(response))
    log.log(revision(), HEADERS, orjson.dumps(request), 200, orjson.dumps(response))
    try:
        events = await eventually(lambda: _at_least(broker, 4), what="4 logged events")
    finally:
        await log.stop()
    first, answer = events[0], events[1]
    assert (first.get_type(), answer.get_type()) == (INFERENCE_REQUEST, INFERENCE_RESPONSE)
    assert first.get_id() == answer.get_id() == "req-42"
    assert events[2].get_id() == events[3].get_id() != "req-42"  # a new id, shared by the pair
    for event in (first, answer):
        attributes = event.get_attributes()
        assert {k: attributes[k] for k in ("inferenceservicename", "namespace", "component", "endpoint")} == {
            "inferenceservicename": "digits", "namespace": "default", "component": "predictor", "endpoint": "default",
        }  # fmt: skip
        assert (attributes["modelversion"], attributes["revision"]) == ("1", "digits-00001")
        assert (attributes["runid"], attributes["pipeline"]) == (RUN["runid"], RUN["pipeline"])
        assert attributes["traceparent"][3:35] == trace[3:35]  # the request's trace goes on
        assert orjson.loads(attributes["metadata"]) == {"inference-header-content-length": ["7"]}
        assert attributes["source"] == "http://127.0.0.1:8182/v2/models/digits"
    assert (first.get_data(), answer.get_data()) == (request, response)
    assert log.published["digits-00001"] == 4


async def _at_least(broker: BrokerServer, n: int) -> list | None:
    events = await stored(broker)
    return events if len(events) >= n else None


async def test_request_mode_logs_requests_only(broker: BrokerServer) -> None:
    log = logger()
    log.broker_url = broker.url + "/"
    await log.start("http://gw")
    for _ in range(3):
        log.log(revision(mode="request"), HEADERS, b'{"inputs": []}', 200, b"{}")
    try:
        await eventually(lambda: log.published["digits-00001"] == 3, what="3 published")
    finally:
        await log.stop()
    assert [e.get_type() for e in await stored(broker)] == [INFERENCE_REQUEST] * 3


# -- the gateway ----------------------------------------------------------------------------------------------------


async def test_a_deployed_revision_with_a_logger_publishes_its_requests(  # type: ignore[no-untyped-def]
    start_gateway, registry: ModelRegistry, broker: BrokerServer, http: ClientSession
) -> None:
    registry.register("digits", mlp_onnx(0))
    gw: Gateway = await start_gateway(broker_port=broker.port)
    base = f"http://127.0.0.1:{gw.port}"
    bad = [{"sample_rate": 1.5}, {"mode": "some"}, {"extensions": {"id": "x"}}, {"extensions": {"Bad": "x"}}]
    for body in bad:
        async with http.post(f"{base}/v1/models/digits/revisions", json={"logger": body}) as r:
            assert r.status == 400 and "logger" in (await r.json())["error"]
    deploy = {"logger": {"sample_rate": 1.0, "extensions": RUN}}
    async with http.post(f"{base}/v1/models/digits/revisions", json=deploy) as r:
        assert r.status == 201
    x = np.random.default_rng(0).random((2, 64), dtype=np.float32)
    for _ in range(5):
        async with http.post(f"{base}/v2/models/digits/infer", data=infer_body(x)) as r:
            assert r.status == 200
    requests = await eventually(lambda: _of_type(broker, INFERENCE_REQUEST, 5), what="5 logged requests")
    assert np.allclose(np.asarray(requests[0].get_data()["inputs"][0]["data"]).reshape(2, 64), x)
    async with http.get(f"{base}/metrics") as r:
        text = await r.text()
    samples = parse(text)
    assert value(samples, "knflow_inference_log_published_total", revision="digits-00001") == 10
    assert value(samples, "knflow_inference_log_encode_seconds_total") > 0
    async with http.get(f"{base}/v1/models/digits") as r:
        assert (await r.json())["revisions"][0]["logger"] == {"mode": "all", "sample_rate": 1.0, "extensions": RUN}


async def _of_type(broker: BrokerServer, type_: str, n: int) -> list | None:
    events = await stored(broker, type_)
    return events if len(events) >= n else None


async def test_a_broker_that_never_answers_does_not_slow_inference(  # type: ignore[no-untyped-def]
    start_gateway, registry: ModelRegistry, http: ClientSession
) -> None:
    held: list[asyncio.StreamWriter] = []
    silent = await asyncio.start_server(lambda _r, w: held.append(w), "127.0.0.1", 0)  # takes, answers nothing
    port = silent.sockets[0].getsockname()[1]
    registry.register("digits", mlp_onnx(0))
    gw: Gateway = await start_gateway(broker_port=port, log_queue_limit=20)
    base = f"http://127.0.0.1:{gw.port}"
    async with http.post(f"{base}/v1/models/digits/revisions", json={"logger": {"extensions": RUN}}) as r:
        assert r.status == 201
    body = infer_body(np.ones((1, 64), np.float32))
    took = []
    for _ in range(60):
        began = time.monotonic()
        async with http.post(f"{base}/v2/models/digits/infer", data=body) as r:
            assert r.status == 200
        took.append(time.monotonic() - began)
    assert sorted(took)[len(took) // 2] < 0.1  # the median request does not wait on the publisher's 10 s timeout
    async with http.get(f"{base}/metrics") as r:
        text = await r.text()
    samples = parse(text)
    dropped = value(samples, "knflow_inference_log_dropped_total", revision="digits-00001", reason="queue_full")
    queued = value(samples, "knflow_inference_log_queued")
    assert 0 < queued <= 20  # bounded: what came beyond the limit was dropped, and counted
    assert dropped >= 2 * (60 - 20 - 30)
    silent.close()
