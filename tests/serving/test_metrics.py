"""The gateway's ``/metrics`` through prometheus_client: the names and labels its readers use, counters that move with
real inferences (a cold start from zero replicas, the time the first request queued), and escaped label values."""

from __future__ import annotations

import numpy as np
from aiohttp import ClientSession

from serving.metrics import Metrics
from serving.registry import ModelRegistry
from tests.scrape import parse, scrape, value
from tests.serving.helpers import infer_body, mlp_onnx

REV = "digits-00001"


async def test_inferences_move_requests_latency_cold_starts_and_queue_time(
    start_gateway, registry: ModelRegistry, http: ClientSession
) -> None:  # type: ignore[no-untyped-def]
    registry.register("digits", mlp_onnx(0))
    gateway = await start_gateway()
    base = f"http://127.0.0.1:{gateway.port}"
    async with http.post(f"{base}/v1/models/digits/revisions", json={"version": 1}) as response:
        assert response.status == 201, await response.text()
    good = infer_body(np.zeros((1, 64), np.float32))
    for body in (good, good, good, b'{"inputs": "not a list"}'):
        async with http.post(f"{base}/v2/models/digits/infer", data=body) as response:
            await response.read()
    s = await scrape(http, base)
    assert value(s, "knflow_requests_total", revision=REV, code="200") == 3
    assert value(s, "knflow_requests_total", revision=REV, code="400") == 1
    assert value(s, "knflow_errors_total", revision=REV) == 0
    assert value(s, "knflow_request_duration_seconds_count", revision=REV) == 4
    assert value(s, "knflow_request_duration_seconds_bucket", revision=REV, le="+Inf") == 4
    assert value(s, "knflow_cold_starts_total", revision=REV) == 1  # the first request found no replica
    assert value(s, "knflow_queue_seconds_count", revision=REV) == 1  # ... and waited for it; the others did not
    assert value(s, "knflow_queue_seconds_sum", revision=REV) > 0
    assert value(s, "knflow_replicas", revision=REV) == 1
    assert value(s, "knflow_cold_start_seconds", revision=REV) > 0
    assert ("knflow_inference_log_queued", frozenset()) in s


def test_label_values_with_quotes_backslashes_and_newlines_are_escaped() -> None:
    odd = 'a"b\\c\nd'
    metrics = Metrics()
    metrics.observe(odd, 500, 0.2)
    metrics.rollout(odd, "promote")
    s = parse(metrics.render({"replicas": {odd: 2}}))
    assert value(s, "knflow_requests_total", revision=odd, code="500") == 1
    assert value(s, "knflow_errors_total", revision=odd) == 1
    assert value(s, "knflow_request_duration_seconds_bucket", revision=odd, le="0.25") == 1
    assert value(s, "knflow_rollout_decisions_total", model=odd, decision="promote") == 1
    assert value(s, "knflow_replicas", revision=odd) == 2
    assert metrics.counts(odd) == (1, 1)
