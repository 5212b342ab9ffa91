"""Event ingress that asks for a token keeps a team's events in its namespaces: an event claiming another namespace
(by its ``namespace`` extension, or none, which is ``default``) is refused with 404 and nothing of its POST is kept."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiohttp import ClientSession

from eventing.broker import BrokerServer
from functions.contract import with_lifecycle
from infra.auth import TokenFile, tokens_path
from infra.settings import load_settings


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[tuple[BrokerServer, dict[str, str]]]:
    env = {"KNFLOW_DATA_DIR": str(tmp_path), "KNFLOW_SECURITY_OPEN_INGRESS": "false"}
    settings = with_lifecycle(load_settings(env, config_file=None))
    tokens = TokenFile(tokens_path(settings))
    made = {"team-b": tokens.create("team-b", "editor", ("team-b",)), "all": tokens.create("all", "editor", ("*",))}
    async with BrokerServer(settings, [], port=0) as server:
        yield server, made


def event(namespace: str | None, n: int = 1) -> dict[str, str]:
    body = {"specversion": "1.0", "id": f"e-{namespace}-{n}", "source": "/team", "type": "dev.test.claim"}
    return body | ({"namespace": namespace} if namespace else {})


async def post(server: BrokerServer, token: str, events: list[dict[str, str]]) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/cloudevents-batch+json"}
    async with ClientSession() as http, http.post(server.url + "/", data=orjson.dumps(events), headers=headers) as r:
        return r.status, await r.text()


async def kept(server: BrokerServer, token: str) -> list[str]:
    async with (
        ClientSession() as http,
        http.get(server.url + "/events?limit=100", headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        assert r.status == 200, await r.text()
        return [e["id"] for e in (await r.json())["events"]]


async def test_a_team_publishes_into_its_own_namespace_only(broker) -> None:  # type: ignore[no-untyped-def]
    server, tokens = broker
    assert (await post(server, tokens["team-b"], [event("team-b")]))[0] == 202
    for claim in ("team-a", None):
        status, text = await post(server, tokens["team-b"], [event(claim)])
        assert status == 404 and f"no namespace '{claim or 'default'}'" in text, (claim, status, text)
    status, _ = await post(server, tokens["team-b"], [event("team-b", 2), event("team-a", 2)])
    assert status == 404
    assert await kept(server, tokens["all"]) == ["e-team-b-1"]  # nothing of the refused batch was kept


async def test_a_token_for_every_namespace_publishes_into_any(broker) -> None:  # type: ignore[no-untyped-def]
    server, tokens = broker
    assert (await post(server, tokens["all"], [event("team-a"), event(None)]))[0] == 202
    assert sorted(await kept(server, tokens["all"])) == ["e-None-1", "e-team-a-1"]
