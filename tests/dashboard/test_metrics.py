"""The knflow server's ``/metrics``: API requests by route template, method and status, with their durations, read
with prometheus_client's parser from a real server in front of a real broker and gateway."""

from __future__ import annotations

from aiohttp import ClientSession

from eventing.broker import BrokerServer
from serving.gateway import Gateway
from tests.scrape import scrape, value


async def test_api_requests_are_counted_by_route_and_status(
    start_dashboard, broker: BrokerServer, gateway: Gateway, http: ClientSession
) -> None:  # type: ignore[no-untyped-def]
    dashboard = await start_dashboard(broker.url, f"http://127.0.0.1:{gateway.port}")
    for path in ("/api/runs", "/api/runs", "/api/runs/no-such-run", "/api/no/such/route"):
        async with http.get(dashboard.url + path) as response:
            await response.read()
    s = await scrape(http, dashboard.url)
    assert value(s, "knflow_api_requests_total", route="/api/runs", method="GET", code="200") == 2
    assert value(s, "knflow_api_requests_total", route="/api/runs/{runid}", method="GET", code="404") == 1
    assert value(s, "knflow_api_requests_total", route="unmatched", method="GET", code="404") == 1
    assert value(s, "knflow_api_request_duration_seconds_count", route="/api/runs") == 2
    assert value(s, "knflow_api_request_duration_seconds_bucket", route="/api/runs", le="+Inf") == 2
