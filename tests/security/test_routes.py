"""Every route of every server has an access decision, and the guard enforces it on the real servers: no token is
401, a viewer changing something is 403, an editor managing the platform is 403, a foreign Host is 421.

The walk covers the broker (with its sources), the function runner, the inference gateway and the knflow server,
each started in-process with the settings a platform gives it (guarded, bound to loopback). A route added without
``@access`` fails here.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from aiohttp import ClientSession, web

from eventing.broker import BrokerServer
from functions.contract import with_lifecycle
from functions.runtime.runner import Runner
from infra.auth import TokenFile, tokens_path
from infra.guard import COOKIE, SAFE_METHODS, access_of
from infra.localservices import free_platform_ports
from infra.settings import Settings, load_settings
from infra.store import open_store
from knflow.dashboard.server import Dashboard
from serving.gateway import Gateway

#: State-changing routes that take no editor token on purpose: event ingress and inference (open on loopback,
#: a token beyond it), the signed webhook, and signing in and out.
NOT_EDITOR = {
    ("broker", "POST", "/"), ("broker", "POST", "/{namespace}/{broker}"), ("broker", "POST", "/sources/minio"),
    ("broker", "POST", "/sources/webhook"), ("functions", "*", "/functions/{name}"), ("functions", "*", "/{name}"),
    ("gateway", "POST", "/v2/models/{name}/infer"), ("gateway", "POST", "/v2/models/{name}/versions/{version}/infer"),
    ("knflow", "POST", "/api/login"), ("knflow", "POST", "/api/logout"),
}  # fmt: skip

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Route:
    server: str
    base: str
    method: str
    path: str  # the template
    level: str | None

    def url(self) -> str:
        return self.base + re.sub(r"\{[^}]+\}", "nope", self.path)


@dataclass
class Servers:
    settings: Settings
    routes: list[Route]
    tokens: dict[str, str]


def _routes(server: str, base: str, app: web.Application) -> list[Route]:
    out = []
    for route in app.router.routes():
        if isinstance(route.resource, web.StaticResource):
            continue
        level = access_of(route.handler)
        out.append(Route(server, base, route.method, route.resource.canonical, level))  # type: ignore[union-attr]
    return out


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def servers(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Servers]:
    data = tmp_path_factory.mktemp("guarded")
    env = {"KNFLOW_DATA_DIR": str(data), **free_platform_ports()}
    settings = with_lifecycle(load_settings(env, config_file=None))
    tokens = TokenFile(tokens_path(settings))
    made = {role: tokens.create(f"team-{role}", role, ("*",)) for role in ("viewer", "editor", "admin")}
    broker = await BrokerServer(settings, port=settings.broker_port).start()
    runner = Runner(settings)
    await runner.start()
    gateway = Gateway(settings, open_store(settings.artifacts))
    await gateway.start()
    dashboard = await Dashboard(settings).start()
    host = settings.host
    routes = [
        *_routes("broker", broker.url, broker._runner.app),  # type: ignore[union-attr]
        *_routes("functions", f"http://{host}:{runner.port}", runner._runner.app),  # type: ignore[union-attr]
        *_routes("gateway", f"http://{host}:{gateway.port}", gateway.runner.app),  # type: ignore[union-attr]
        *_routes("knflow", dashboard.url, dashboard._runner.app),  # type: ignore[union-attr]
    ]
    yield Servers(settings, routes, made)
    await dashboard.stop()
    await gateway.stop()
    await runner.stop()
    await broker.stop()


async def call(route: Route, token: str | None = None, **headers: str) -> int:
    return (await answer(route, token, **headers))[0]


async def answer(route: Route, token: str | None = None, **headers: str) -> tuple[int, str]:
    method = "POST" if route.method == "*" else route.method
    sent = {"Content-Type": "application/json", **headers}
    if token:
        sent["Authorization"] = f"Bearer {token}"
    body = b"{}" if method not in SAFE_METHODS else None
    async with ClientSession() as http, http.request(method, route.url(), data=body, headers=sent) as r:
        return r.status, await r.text()


async def test_every_route_has_an_access_decision_and_changes_need_an_editor(servers: Servers) -> None:
    assert len(servers.routes) > 40
    undecided = [(r.server, r.method, r.path) for r in servers.routes if r.level is None]
    assert undecided == []
    for r in servers.routes:
        if r.method not in SAFE_METHODS and (r.server, r.method, r.path) not in NOT_EDITOR:
            assert r.level in ("editor", "admin", "platform"), (r.server, r.method, r.path, r.level)


async def test_without_a_token_every_route_but_the_open_ones_is_401(servers: Servers) -> None:
    for r in servers.routes:
        status, text = await answer(r)
        if (r.server, r.method, r.path) == ("broker", "POST", "/sources/webhook"):  # its own HMAC signature instead
            assert status == 401 and "webhook" in text and "token" not in text, text
        elif r.level in ("open", "ingress", "inference"):  # ingress and inference: open on loopback by default
            assert status != 401, (r.server, r.method, r.path)
        else:
            assert status == 401, (r.server, r.method, r.path, status)


async def test_a_viewer_cannot_change_anything_and_an_editor_cannot_manage(servers: Servers) -> None:
    for r in servers.routes:
        if r.level in ("editor", "admin", "platform"):
            if r.method in SAFE_METHODS:
                assert await call(r, servers.tokens["viewer"]) not in (401, 403), (r.server, r.path)
            else:
                assert await call(r, servers.tokens["viewer"]) == 403, (r.server, r.method, r.path)
        if r.level in ("admin", "platform") and r.method not in SAFE_METHODS:
            assert await call(r, servers.tokens["editor"]) == 403, (r.server, r.method, r.path)
            assert await call(r, servers.tokens["admin"]) not in (401, 403), (r.server, r.method, r.path)


async def test_a_viewer_token_reads_every_servers_metrics_as_prometheus_would(servers: Servers) -> None:
    scraped = [r for r in servers.routes if r.path == "/metrics"]
    assert {r.server for r in scraped} == {"broker", "functions", "gateway", "knflow"}
    for r in scraped:
        assert await call(r, servers.tokens["viewer"]) == 200, r.server


async def test_a_foreign_host_is_refused_by_every_route(servers: Servers) -> None:
    for r in servers.routes:
        assert await call(r, servers.tokens["admin"], Host="evil.example") == 421, (r.server, r.method, r.path)


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data"])
async def test_a_page_elsewhere_cannot_post_a_form_or_text(servers: Servers, content_type: str) -> None:
    changes = [
        r for r in servers.routes if r.method == "POST" and r.level in ("editor", "admin", "platform", "ingress")
    ]
    for r in changes:
        cookie = f"{COOKIE}={servers.tokens['admin']}"  # the session a browser would carry, not a header it could add
        status = await call(r, None, Cookie=cookie, **{"Content-Type": content_type})
        assert status == 415, (r.server, r.path, status)
    for r in changes:
        status = await call(r, servers.tokens["admin"], Origin="http://evil.example")
        assert status == 403, (r.server, r.path, status)
    inference = [r for r in servers.routes if r.method == "POST" and r.level == "inference"]
    assert inference
    for r in inference:  # inference changes nothing, and `curl -d` sends its JSON as a form
        assert await call(r, None, **{"Content-Type": content_type}) == 404, (r.server, r.path)  # no model "nope"


@pytest.mark.parametrize(
    "subscriber",
    ["http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/", "http://example.com/hook"],
)
async def test_a_trigger_cannot_point_the_broker_at_metadata_link_local_or_unlisted_hosts(
    servers: Servers, subscriber: str
) -> None:
    broker = next(r.base for r in servers.routes if r.server == "broker")
    headers = {"Authorization": f"Bearer {servers.tokens['admin']}"}
    spec = {"subscriber": {"uri": subscriber}}
    async with ClientSession() as http, http.put(f"{broker}/triggers/evil", json=spec, headers=headers) as r:
        assert r.status == 400, await r.text()
        assert "never calls" in await r.text() or "not an allowed target" in await r.text()


#: Routes that belong to a namespace: another namespace's token gets 404 there, before anything is read.
NAMESPACED = re.compile(r"^/(api/(runs|compare|models|serving|failures|pipelines|schedules)|v1/models|v2/models/)")
#: Routes that do not belong to a namespace: the platform's own (health, sign-in, triggers, function instances, the
#: broker's history for the admin's tools).
NOT_NAMESPACED = re.compile(
    r"^/($|health|v2$|v2/health|metrics|api/(login|logout|whoami|health)|triggers|events|sources"
    r"|functions|admin|\{name\}|\{namespace\})"
)


async def test_every_route_decides_its_namespace_and_another_namespaces_token_gets_404(servers: Servers) -> None:
    other = TokenFile(tokens_path(servers.settings)).create("team-b", "editor", ("team-b",))
    for r in servers.routes:
        assert bool(NAMESPACED.match(r.path)) != bool(NOT_NAMESPACED.match(r.path)), (r.server, r.path)
        if not NAMESPACED.match(r.path):
            continue
        for asked in ({"X-Knflow-Namespace": "team-a"}, {"X-Knflow-Namespace": "default"}):
            status, text = await answer(r, other, **asked)
            if r.level in ("admin", "platform") and r.method not in SAFE_METHODS:  # a role too weak is still 403
                assert status == 403, (r.server, r.method, r.path, asked, status)
                continue
            assert status == 404, (r.server, r.method, r.path, asked, status)
            if r.method != "HEAD":
                assert "no namespace" in text, (r.server, r.method, r.path, text)


async def test_only_an_admin_of_every_namespace_manages_triggers_function_instances_and_sources(
    servers: Servers,
) -> None:
    team_admin = TokenFile(tokens_path(servers.settings)).create("team-a-admin", "admin", ("team-a",))
    platform = [r for r in servers.routes if r.level == "platform" and r.method not in SAFE_METHODS]
    assert {(r.server, r.path) for r in platform} >= {
        ("broker", "/triggers/{name}"),
        ("functions", "/admin/functions/{name}"),
    }
    for r in platform:
        status, text = await answer(r, team_admin)
        assert status == 403 and "admin of all" in text, (r.server, r.method, r.path, status)
        assert await call(r, servers.tokens["admin"]) not in (401, 403), (r.server, r.method, r.path)
