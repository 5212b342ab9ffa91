"""The one middleware every knflow server runs: Host and Origin checks, content types, who is calling, may they.

Every route declares its access with ``@access(...)``: ``open`` (health, the page itself), ``viewer`` (reads),
``editor`` (changes runs, pipelines, models, traffic), ``admin`` (triggers, function instances), or ``ingress`` /
``inference`` (event ingress and V2 inference: open on loopback by default, a token otherwise). A route without a
decision is refused (500), and a test walks every app's routes. Fast paths that answer outside aiohttp call
``Guard.host_allowed`` and take only what the policy lets through without a token.

Browser-borne attacks: a state change must come with a JSON, YAML or CloudEvents content type (a form or
``text/plain`` body is refused, so a page elsewhere cannot send one without a CORS preflight), its ``Origin`` (when
a browser sends one) must be one of the platform's, and the ``Host`` must be one of the server's names (which
stops DNS rebinding).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from infra.auth import Principal, Role, TokenFile
from infra.http import json_response

Access = Literal["open", "viewer", "editor", "admin", "ingress", "inference"]
ATTRIBUTE = "knflow_access"
COOKIE = "knflow_token"
PRINCIPAL = "knflow.principal"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CHANGE_TYPES = (
    "application/json",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
    "application/yaml",
    "application/x-yaml",
    "application/octet-stream",
)
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def access(level: Access) -> Callable[[Any], Any]:
    """Declare who may call a route handler."""

    def mark(handler: Any) -> Any:
        setattr(getattr(handler, "__func__", handler), ATTRIBUTE, level)
        return handler

    return mark


def access_of(handler: Any) -> Access | None:
    """The access a handler declared (None: no decision)."""
    return getattr(getattr(handler, "__func__", handler), ATTRIBUTE, None)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass(frozen=True)
class Guard:
    """A server's policy: its names, the platform's origins, its token file, and what is open without a token."""

    tokens: TokenFile | None
    hosts: frozenset[str] = LOOPBACK_NAMES
    origins: frozenset[str] = frozenset()
    open_ingress: bool = True
    open_inference: bool = True
    open_all: bool = False  # no token asked anywhere (a single-user laptop that chose so)

    def host_allowed(self, host_header: str | None) -> bool:
        """Whether a request's ``Host`` names this server (the port is not compared)."""
        if not host_header:
            return False
        host = host_header.strip().lower()
        if host.startswith("["):
            host = host[: host.find("]") + 1]
        elif host.count(":") == 1:
            host = host.rsplit(":", 1)[0]
        return host in self.hosts

    def origin_allowed(self, origin: str | None) -> bool:
        return origin is None or origin in self.origins

    def principal(self, request: web.Request) -> Principal | None:
        """The caller, from ``Authorization: Bearer`` or the dashboard's cookie."""
        if self.tokens is None:
            return None
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else request.cookies.get(COOKIE, "")
        return self.tokens.verify(token) if token else None

    def needed(self, level: Access, method: str) -> Role | None:
        """The role a route needs for ``method`` (None: no token needed)."""
        if level == "open" or self.open_all:
            return None
        if level == "ingress":
            return None if self.open_ingress else "editor"
        if level == "inference":
            return None if self.open_inference else "viewer"
        return "viewer" if method in SAFE_METHODS else level  # type: ignore[return-value]


def refuse(status: int, reason: str, **headers: str) -> web.Response:
    return json_response({"error": reason}, status, headers=headers or None)


def guard_middleware(guard: Guard) -> Any:
    """The middleware: one decision per request, before the handler runs."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not guard.host_allowed(request.headers.get("Host")):
            return refuse(421, f"this server does not answer to host {request.headers.get('Host')!r}")
        route = request.match_info.route
        level = "open" if isinstance(route.resource, web.StaticResource) else access_of(route.handler)
        if level is None:
            if request.match_info.http_exception is not None:  # 404/405: no route matched
                raise request.match_info.http_exception
            return refuse(500, f"route {request.method} {request.path} has no access decision")
        if request.method not in SAFE_METHODS and level != "open":
            problem = _browser_problem(guard, request)
            if problem:
                return problem
        role = guard.needed(level, request.method)
        if role is None:
            return await handler(request)
        principal = guard.principal(request)
        if principal is None:
            return refuse(401, "a bearer token is needed (knflow token create)", **{"WWW-Authenticate": "Bearer"})
        if not principal.can(role):
            return refuse(403, f"token {principal.name!r} is a {principal.role}; this needs {role}")
        request[PRINCIPAL] = principal
        return await handler(request)

    return check


def _browser_problem(guard: Guard, request: web.Request) -> web.Response | None:
    """Why a state change may have come from a page elsewhere (None when it cannot have)."""
    if not guard.origin_allowed(request.headers.get("Origin")):
        return refuse(403, f"origin {request.headers.get('Origin')!r} may not change anything here")
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        return refuse(403, "a cross-site request may not change anything here")
    ctype = request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    has_body = request.can_read_body or (request.content_length or 0) > 0
    if has_body and ctype not in CHANGE_TYPES and not request.headers.get("ce-specversion"):
        return refuse(415, f"content type {ctype or 'none'!r} is not accepted for a change; send JSON")
    return None


def principal_of(request: web.Request) -> Principal | None:
    """The caller the middleware authenticated (None on an open route or when no token is asked)."""
    return request.get(PRINCIPAL)
