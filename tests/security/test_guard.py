"""The one middleware: Host and Origin checks, content types, tokens and roles, on a real aiohttp server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from infra.auth import TokenFile
from infra.guard import COOKIE, Guard, access, guard_middleware, principal_of, server_middlewares
from infra.settings import load_settings
from tests.webapps import served


class Api:
    @access("open")
    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    @access("viewer")
    async def read(self, request: web.Request) -> web.Response:
        principal = principal_of(request)
        return web.json_response({"who": principal.name if principal else None})

    @access("editor")
    async def change(self, request: web.Request) -> web.Response:
        return web.json_response({"changed": True})

    @access("admin")
    async def manage(self, request: web.Request) -> web.Response:
        return web.json_response({"managed": True})

    @access("ingress")
    async def ingress(self, request: web.Request) -> web.Response:
        return web.Response(status=202)

    @access("inference")
    async def infer(self, request: web.Request) -> web.Response:
        return web.json_response({"outputs": []})

    async def undecided(self, request: web.Request) -> web.Response:
        return web.json_response({"oops": True})


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[str, TokenFile, dict[str, str]]]:
    tokens = TokenFile(tmp_path / "tokens.json")
    made = {role: tokens.create(f"t-{role}", role, ("team-a",)) for role in ("viewer", "editor", "admin")}
    guard = Guard(tokens, origins=frozenset({"http://127.0.0.1:8183"}), open_ingress=False)
    api = Api()
    app = web.Application(middlewares=[guard_middleware(guard)])
    app.router.add_get("/health", api.health)
    app.router.add_get("/things", api.read)
    app.router.add_post("/things", api.change)
    app.router.add_delete("/things", api.manage)
    app.router.add_post("/", api.ingress)
    app.router.add_get("/undecided", api.undecided)
    async with served(app) as url:
        yield url, tokens, made


async def status(method: str, url: str, **kw) -> int:  # type: ignore[no-untyped-def]
    async with ClientSession() as http, http.request(method, url, **kw) as r:
        return r.status


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_roles_decide_what_a_token_may_do(server) -> None:  # type: ignore[no-untyped-def]
    url, _, made = server
    assert await status("GET", url + "/health") == 200
    assert await status("GET", url + "/things") == 401
    assert await status("GET", url + "/things", headers=bearer("knf_not-a-real-token")) == 401
    assert await status("GET", url + "/things", headers=bearer(made["viewer"])) == 200
    assert await status("POST", url + "/things", json={}, headers=bearer(made["viewer"])) == 403
    assert await status("POST", url + "/things", json={}, headers=bearer(made["editor"])) == 200
    assert await status("DELETE", url + "/things", headers=bearer(made["editor"])) == 403
    assert await status("DELETE", url + "/things", headers=bearer(made["admin"])) == 200
    assert await status("POST", url + "/", json={}) == 401  # ingress asks for a token when it is not open
    assert await status("GET", url + "/undecided", headers=bearer(made["admin"])) == 500


async def test_a_revoked_token_is_refused_at_once(server) -> None:  # type: ignore[no-untyped-def]
    url, tokens, made = server
    assert await status("GET", url + "/things", headers=bearer(made["viewer"])) == 200
    TokenFile(tokens.path).revoke("t-viewer")  # another process revokes it
    assert await status("GET", url + "/things", headers=bearer(made["viewer"])) == 401


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
        ({"Content-Type": "text/plain"}, 415),
        ({"Content-Type": "multipart/form-data; boundary=x"}, 415),
        ({"Content-Type": "application/json", "Origin": "http://evil.example"}, 403),
        ({"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}, 403),
        ({"Content-Type": "application/json", "Origin": "http://127.0.0.1:8183"}, 200),
    ],
)
async def test_browser_borne_changes_are_refused(server, headers: dict[str, str], code: int) -> None:  # type: ignore[no-untyped-def]
    """With the session cookie a browser carries by itself, the only credential a page elsewhere could ride on."""
    url, _, made = server
    cookie = {"Cookie": f"{COOKIE}={made['editor']}"}
    assert await status("POST", url + "/things", data=b"{}", headers={**headers, **cookie}) == code


@pytest.mark.parametrize("content_type", ["multipart/form-data; boundary=x", "text/csv"])
async def test_a_client_that_sends_its_token_may_upload_any_body(server, content_type: str) -> None:  # type: ignore[no-untyped-def]
    """``Authorization`` is a header no page elsewhere can add without a preflight: the CLI's multipart upload passes,
    and a foreign Origin is still refused."""
    url, _, made = server
    headers = {"Content-Type": content_type, **bearer(made["editor"])}
    assert await status("POST", url + "/things", data=b"{}", headers=headers) == 200
    foreign = {**headers, "Origin": "http://evil.example"}
    assert await status("POST", url + "/things", data=b"{}", headers=foreign) == 403


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8183", "127.0.0.2", ""])
async def test_a_foreign_host_is_refused_against_dns_rebinding(server, host: str) -> None:  # type: ignore[no-untyped-def]
    url = server[0]
    assert await status("GET", url + "/health", headers={"Host": host}) == 421
    assert await status("GET", url + "/health", headers={"Host": "localhost:1234"}) == 200


async def test_the_middleware_hands_the_handler_the_authenticated_caller(server) -> None:  # type: ignore[no-untyped-def]
    url, _, made = server
    async with ClientSession() as http, http.get(url + "/things", headers=bearer(made["viewer"])) as r:
        assert await r.json() == {"who": "t-viewer"}
    async with ClientSession() as http, http.get(url + "/things", headers={"Cookie": f"{COOKIE}={made['admin']}"}) as r:
        assert await r.json() == {"who": "t-admin"}  # the dashboard's cookie, when no Authorization is sent
    async with ClientSession() as http, http.get(url + "/things", headers={"Authorization": "Basic dXNlcg=="}) as r:
        assert r.status == 401 and r.headers["WWW-Authenticate"] == "Bearer"
        assert await r.json() == {"error": "a bearer token is needed (knflow token create)"}


@pytest.fixture
async def tokenless(tmp_path: Path) -> AsyncIterator[str]:
    """A server of a platform that asks no token (``security.open``), with knflow's own middlewares."""
    settings = load_settings({"KNFLOW_DATA_DIR": str(tmp_path), "KNFLOW_SECURITY_OPEN": "true"}, config_file=None)
    api = Api()
    app = web.Application(middlewares=server_middlewares(settings))
    app.router.add_post("/things", api.change)
    app.router.add_post("/v2/models/m/infer", api.infer)
    async with served(app) as url:
        yield url


async def _chunks() -> AsyncIterator[bytes]:
    yield b"a=1"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"data": b"a=1"}, 415),
        ({"data": _chunks}, 415),  # chunked: no length, a body all the same
        ({"data": b""}, 200),  # Content-Length: 0, no body to be a form
        ({}, 200),
    ],
)
async def test_without_tokens_a_change_with_a_body_needs_a_json_type(tokenless: str, body: dict, code: int) -> None:
    sent = {k: v() if callable(v) else v for k, v in body.items()}
    headers = {"Content-Type": "text/plain"}
    async with ClientSession() as http, http.post(tokenless + "/things", headers=headers, **sent) as r:
        assert r.status == code
        if code == 415:
            assert await r.json() == {"error": "content type 'text/plain' is not accepted for a change; send JSON"}


async def test_inference_takes_a_form_body_as_curl_sends_it(tokenless: str) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert await status("POST", tokenless + "/v2/models/m/infer", data=b'{"inputs": []}', headers=form) == 200
    foreign = {**form, "Origin": "http://evil.example"}
    assert await status("POST", tokenless + "/v2/models/m/infer", data=b"{}", headers=foreign) == 403


async def test_a_route_that_is_not_there_is_answered_in_json(tokenless: str) -> None:
    async with ClientSession() as http, http.get(tokenless + "/nothing/here") as r:
        assert r.status == 404 and (await r.json())["error"]


def test_the_token_file_keeps_no_token(tmp_path: Path) -> None:
    tokens = TokenFile(tmp_path / "tokens.json")
    token = tokens.create("ci", "editor", ("team-a", "team-b"))
    assert token not in (tmp_path / "tokens.json").read_text()
    assert (tmp_path / "tokens.json").stat().st_mode & 0o777 == 0o600
    principal = tokens.verify(token)
    assert principal and principal.sees("team-b") and not principal.sees("team-c") and principal.can("viewer")
    assert [t["name"] for t in tokens.list()] == ["ci"] and "sha256" not in tokens.list()[0]


def test_a_server_behind_a_routing_ingress_answers_any_host_when_told() -> None:
    assert Guard(tokens=None, hosts=frozenset({"*"})).host_allowed("knflow-model-digits.team-a.svc.cluster.local")
    assert not Guard(tokens=None).host_allowed("knflow-model-digits.team-a.svc.cluster.local")
