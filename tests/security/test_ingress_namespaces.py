"""Event ingress that asks for a token keeps a team's events in its namespaces: an event claiming another namespace
(by its ``namespace`` extension, or none, which is ``default``) is refused with 404 and nothing of its POST is kept."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import make_mocked_request

from eventing.broker import BrokerServer
from eventing.triggers import Trigger
from functions.contract import with_lifecycle
from infra.auth import TokenFile, tokens_path
from infra.namespaces import ANONYMOUS, EVERY, Scope, scope_key
from infra.settings import load_settings


@pytest.fixture(params=["false", "auto"], ids=["token-ingress", "open-ingress"])
async def broker(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[tuple[BrokerServer, dict[str, str]]]:
    env = {"KNFLOW_DATA_DIR": str(tmp_path), "KNFLOW_SECURITY_OPEN_INGRESS": request.param}
    settings = with_lifecycle(load_settings(env, config_file=None))
    tokens = TokenFile(tokens_path(settings))
    made = {"team-b": tokens.create("team-b", "editor", ("team-b",)), "all": tokens.create("all", "editor", ("*",))}
    made["platform"] = tokens.create("platform", "admin", ("*",))
    async with BrokerServer(settings, [], port=0) as server:
        yield server, made


def event(namespace: str | None, n: int = 1) -> dict[str, str]:
    body = {"specversion": "1.0", "id": f"e-{namespace}-{n}", "source": "/team", "type": "dev.test.claim"}
    return body | ({"namespace": namespace} if namespace else {})


async def post(server: BrokerServer, token: str | None, events: list[dict[str, str]]) -> tuple[int, str]:
    headers = {"Content-Type": "application/cloudevents-batch+json"}
    headers |= {"Authorization": f"Bearer {token}"} if token else {}
    async with ClientSession() as http, http.post(server.url + "/", data=orjson.dumps(events), headers=headers) as r:
        return r.status, await r.text()


async def post_binary(server: BrokerServer, token: str | None, namespace: str | None) -> tuple[int, str]:
    """One event in binary mode: the broker's fast ingress path answers it when ingress is open."""
    headers = {"ce-specversion": "1.0", "ce-id": f"b-{namespace}", "ce-source": "/team", "ce-type": "dev.test.claim"}
    headers |= {"ce-namespace": namespace} if namespace else {}
    headers |= {"Authorization": f"Bearer {token}"} if token else {}
    async with ClientSession() as http, http.post(server.url + "/", data=b"{}", headers=headers) as r:
        return r.status, await r.text()


async def kept_rows(server: BrokerServer, token: str) -> list[dict]:
    async with (
        ClientSession() as http,
        http.get(server.url + "/events?limit=100", headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        assert r.status == 200, await r.text()
        return (await r.json())["events"]


def namespace_of_row(row: dict) -> str:
    return row.get("namespace") or "default"


async def kept(server: BrokerServer, token: str) -> list[str]:
    return [e["id"] for e in await kept_rows(server, token)]


async def test_a_team_publishes_into_its_own_namespace_only(broker) -> None:  # type: ignore[no-untyped-def]
    server, tokens = broker
    assert (await post(server, tokens["team-b"], [event("team-b")]))[0] == 202
    status, text = await post(server, tokens["team-b"], [event("team-a")])
    assert status == 404 and "no namespace 'team-a'" in text, (status, text)
    if not server._open_ingress:  # open ingress takes default's events from anyone, token or not
        status, text = await post(server, tokens["team-b"], [event(None)])
        assert status == 404 and "no namespace 'default'" in text, (status, text)
    status, _ = await post(server, tokens["team-b"], [event("team-b", 2), event("team-a", 2)])
    assert status == 404
    assert await kept(server, tokens["all"]) == ["e-team-b-1"]  # nothing of the refused batch was kept


async def test_a_token_for_every_namespace_publishes_into_any(broker) -> None:  # type: ignore[no-untyped-def]
    server, tokens = broker
    assert (await post(server, tokens["all"], [event("team-a"), event(None)]))[0] == 202
    assert sorted(await kept(server, tokens["all"])) == ["e-None-1", "e-team-a-1"]


async def test_the_trigger_list_and_its_series_show_a_team_its_own_namespaces_triggers_only(broker) -> None:  # type: ignore[no-untyped-def]
    server, tokens = broker
    platform = {"Authorization": f"Bearer {tokens['platform']}"}
    specs = {
        "team-a.flow-step": {"filter": {"attributes": {"type": "t", "namespace": "team-a"}}},
        "team-b.flow-step": {
            "filters": [{"exact": {"type": "t"}}, {"exact": {"pipeline": "flow", "namespace": "team-b"}}]
        },
        "shared-step": {"filter": {"attributes": {"type": "t"}}},
    }
    async with ClientSession() as http:
        for name, spec in specs.items():
            spec = {**spec, "subscriber": {"uri": f"{server.url}/nowhere"}}
            async with http.put(f"{server.url}/triggers/{name}", json=spec, headers=platform) as r:
                assert r.status in (200, 202), await r.text()

        async def seen(token: str) -> tuple[set[str], str]:
            headers = {"Authorization": f"Bearer {token}"}
            async with http.get(server.url + "/triggers", headers=headers) as r:
                names = {t["name"] for t in (await r.json())["items"]}
            async with http.get(server.url + "/metrics", headers=headers) as r:
                return names, await r.text()

        names, series = await seen(tokens["team-b"])
        assert names == {"team-b.flow-step"}
        assert 'trigger="team-b.flow-step"' in series and 'trigger="team-a.flow-step"' not in series
        assert 'trigger="shared-step"' not in series  # one taking every namespace's: default's
        names, series = await seen(tokens["all"])
        assert names == set(specs) and all(f'trigger="{n}"' in series for n in specs)


@pytest.mark.parametrize("send", [post_binary, lambda server, token, ns: post(server, token, [event(ns)])])
async def test_open_ingress_takes_defaults_events_from_anyone_and_a_namespaces_only_with_its_token(
    tmp_path: Path, send
) -> None:  # type: ignore[no-untyped-def]
    settings = with_lifecycle(load_settings({"KNFLOW_DATA_DIR": str(tmp_path)}, config_file=None))
    team_b = TokenFile(tokens_path(settings)).create("team-b", "editor", ("team-b",))
    async with BrokerServer(settings, [], port=0) as server:
        assert server._open_ingress  # loopback: open by default
        assert (await send(server, None, None))[0] == 202
        assert (await send(server, None, "default"))[0] == 202
        for token, claim in ((None, "team-b"), (None, "team-a"), ("not-a-token", "team-b"), (team_b, "team-a")):
            status, text = await send(server, token, claim)
            assert status == 404 and f"no namespace '{claim}'" in text, (token, claim, status, text)
        assert (await send(server, team_b, "team-b"))[0] == 202
        all_token = TokenFile(tokens_path(settings)).create("all", "viewer", ("*",))
        assert {namespace_of_row(e) for e in await kept_rows(server, all_token)} == {"default", "team-b"}


async def test_health_names_only_the_callers_own_namespaces_triggers_still_joining(tmp_path: Path) -> None:
    settings = with_lifecycle(load_settings({"KNFLOW_DATA_DIR": str(tmp_path)}, config_file=None))
    server = BrokerServer(settings, [], port=0)
    joining = {
        name: SimpleNamespace(ready=False, trigger=Trigger(name, "http://127.0.0.1:1/", filter=flt))
        for name, flt in (("team-a.x", {"namespace": "team-a"}), ("team-b.x", {"namespace": "team-b"}), ("y", {}))
    }
    server._dispatchers = joining  # type: ignore[assignment]  # three triggers whose consumer groups have not joined

    async def health(scope: Scope) -> dict:
        request = make_mocked_request("GET", "/health")
        request[scope_key()] = scope
        answer = await server._health(request)
        assert answer.status == 503
        return orjson.loads(answer.body)

    assert (await health(Scope(("team-b",))))["pending"] == ["team-b.x"]
    assert (await health(ANONYMOUS))["pending"] == ["y"]
    assert (await health(EVERY))["pending"] == ["team-a.x", "team-b.x", "y"]
    assert (await health(ANONYMOUS))["triggers"] == 3
