"""A platform configured with ``KNFLOW_HOST=::1``: its broker listens on IPv6 loopback and knflow's own clients reach
it at the URL the settings give, past the guard's Host check."""

from __future__ import annotations

from pathlib import Path

from eventing.broker import BrokerServer
from eventing.events import RUNID, new_event
from functions.runtime.context import Runtime
from infra.asyncclient import AsyncClient
from infra.auth import auth_headers, ensure_local_admin
from infra.localservices import free_port
from tests.ipv6 import needs_ipv6_loopback
from tests.settings_env import settings_in

pytestmark = needs_ipv6_loopback


async def test_a_function_emits_to_a_broker_on_ipv6_loopback_at_the_url_the_settings_give(tmp_path: Path) -> None:
    settings = settings_in(tmp_path, host="::1", broker_port=str(free_port()))
    ensure_local_admin(settings)  # the guard stays on: reading the history takes the machine user's token
    runtime = Runtime("ipv6-emitter", settings)
    history = AsyncClient(settings.url(settings.broker_port), headers=auth_headers(settings), name="broker")
    event = new_event("test.ipv6", "/tests", {"n": 1})
    try:
        async with BrokerServer(settings, sources=[]) as broker:
            assert runtime.sink == f"{broker.url}/" == f"http://[::1]:{settings.broker_port}/"
            # Both calls send "Host: [::1]:PORT", as the URL writes it; the guard takes it as the broker's own name.
            await runtime.emit(event)  # the function's default sink: the broker
            answer = await history.call("GET", f"/events?runid={event.get_extension(RUNID)}")
            assert [e["id"] for e in answer["events"]] == [event.get_id()]
    finally:
        await runtime.close()
        await history.close()
