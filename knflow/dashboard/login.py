"""Signing in to the dashboard: a token becomes a ``SameSite=Strict`` cookie the page's API calls then carry.

GET  /?token=T        (the link `knflow up` prints) sets the cookie and sends the browser on to ``/``
POST /api/login       {"token": T} -> 200 {"name", "role", "namespaces"} and the cookie; 401 for a bad token
POST /api/logout      clears the cookie
GET  /api/whoami      who the cookie (or bearer token) says the caller is, with the namespaces the page offers
                      (``choices``) and the one it shows first (``home``)
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, TypeVar

from aiohttp import web

from infra.auth import TokenFile
from infra.errors import InvalidRequest, KnflowError
from infra.guard import COOKIE, access, principal_of
from infra.http import json_response, read_json
from infra.namespaces import ALL, DEFAULT, scope_of

MAX_AGE_S = 12 * 3600


def add_routes(app: web.Application, tokens: TokenFile | None) -> None:
    api = LoginApi(tokens)
    app.router.add_post("/api/login", api.login)
    app.router.add_post("/api/logout", api.logout)
    app.router.add_get("/api/whoami", api.whoami)


AnyResponse = TypeVar("AnyResponse", bound=web.StreamResponse)


def with_cookie(response: AnyResponse, token: str) -> AnyResponse:
    response.set_cookie(COOKIE, token, max_age=MAX_AGE_S, path="/", httponly=True, samesite="Strict")
    return response


class LoginApi:
    def __init__(self, tokens: TokenFile | None):
        self.tokens = tokens

    @access("open")
    async def login(self, request: web.Request) -> web.Response:
        body = await read_json(request, 4096, "a sign-in")
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise InvalidRequest('expected {"token": "..."}')
        principal = self.tokens.verify(token) if self.tokens else None
        if principal is None:
            raise KnflowError("unknown or revoked token", status=401)
        return with_cookie(json_response(asdict(principal)), token)

    @access("open")
    async def logout(self, request: web.Request) -> web.Response:
        response = json_response({"signed_out": True})
        response.del_cookie(COOKIE, path="/")
        return response

    @access("viewer")
    async def whoami(self, request: web.Request) -> web.Response:
        principal = principal_of(request)
        me: dict[str, Any] = asdict(principal) if principal else {"name": None, "role": "admin", "namespaces": ["*"]}
        return json_response({**me, "choices": self.choices(me["namespaces"]), "home": scope_of(request).home})

    def choices(self, namespaces: list[str]) -> list[str]:
        """The namespaces the dashboard offers the caller: its token's, or for ``*`` every one a token names."""
        if ALL not in namespaces:
            return list(namespaces)
        named = {n for t in (self.tokens.list() if self.tokens else []) for n in t["namespaces"]}
        return [DEFAULT, *sorted(named - {ALL, DEFAULT})]
