"""The one middleware every knflow server runs: Host and Origin checks, content types, who is calling, may they.

Every route declares its access with ``@access(...)``: ``open`` (health, the page itself), ``viewer`` (reads),
``editor`` (changes runs, pipelines, models, traffic), ``admin`` (a namespace's pipelines), ``platform`` (triggers,
function instances, ping sources: an admin token acting for every namespace, ``*``, since they see every namespace's
events), or ``ingress`` / ``inference`` (event ingress and V2 inference: open on loopback by default, a token
otherwise). A route without a
decision is refused (500), and a test walks every app's routes. Fast paths that answer outside aiohttp call
``Guard.host_allowed`` and take only what the policy lets through without a token.

Browser-borne attacks: a state change must come with a JSON, YAML or CloudEvents content type, or with an
``Authorization`` or ``ce-specversion`` header (a form or ``text/plain`` body without them is refused: a page elsewhere
can send those without a CORS preflight, which knflow never grants); its ``Origin`` (when a browser sends one) must be
one of the platform's or the server itself, and the ``Host`` must be one of the server's names (which stops DNS
rebinding).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from infra.auth import Principal, Role, TokenFile, tokens_path
from infra.errors import KnflowError
from infra.http import error_middleware, error_response
from infra.namespaces import ALL, ANONYMOUS, EVERY, Scope, scope_key
from infra.settings import Settings, authority

Access = Literal["open", "viewer", "editor", "admin", "platform", "ingress", "inference"]
ATTRIBUTE = "knflow_access"
COOKIE = "knflow_token"
PRINCIPAL = web.RequestKey("knflow.principal", Principal)
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
# A Host header's name and optional port: a bracketed IPv6 address or a name, then ":digits"; anything else (a bare
# IPv6 address, a malformed value) is compared whole.
_HOST_PORT = re.compile(r"(\[[^\]]*\]|[^:\[\]]*)(?::\d*)?")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def access(level: Access) -> Callable[[Any], Any]:
    """Declare who may call a route handler."""

    def mark(handler: Any) -> Any:
        setattr(handler, ATTRIBUTE, level)
        return handler

    return mark


def access_of(handler: Any) -> Access | None:
    """The access a handler declared (None: no decision); a bound method reads its function's."""
    return getattr(handler, ATTRIBUTE, None)


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
        if "*" in self.hosts:  # behind an ingress that routes by name already (a model's Knative Service)
            return True
        host = host_header.strip().lower()
        named = _HOST_PORT.fullmatch(host)
        return (named.group(1) if named else host) in self.hosts

    def origin_allowed(self, origin: str | None, host_header: str | None = None) -> bool:
        """No browser origin, one of the platform's, or this very server (same origin: its ``Host`` passed already)."""
        if origin is None or origin in self.origins:
            return True
        return host_header is not None and origin.lower() == f"http://{host_header.strip().lower()}"

    def principal(self, request: web.Request) -> Principal | None:
        """The caller, from ``Authorization: Bearer`` or the dashboard's cookie."""
        if self.tokens is None:
            return None
        token = bearer_token(request.headers.get("Authorization")) or request.cookies.get(COOKIE, "")
        return self.tokens.verify(token)

    def needed(self, level: Access, method: str) -> Role | None:
        """The role a route needs for ``method`` (None: no token needed)."""
        if level == "open" or self.open_all:
            return None
        if level == "ingress":
            return None if self.open_ingress else "editor"
        if level == "inference":
            return None if self.open_inference else "viewer"
        if method in SAFE_METHODS:
            return "viewer"
        return "admin" if level == "platform" else level


def guard_for(settings: Settings) -> Guard:
    """The policy of a server of this platform: its names, the platform's origins, the token file, what is open."""
    sec = settings.security
    bound = settings.own_host
    names = set(LOOPBACK_NAMES) | {n.strip().lower() for n in sec.hosts.split(",") if n.strip()}
    if bound is None:  # bound to every interface: the machine's own names too
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    else:
        names |= {bound, f"[{bound}]"} if ":" in bound else {bound}  # a browser sends an IPv6 host in brackets
    ports = settings.http_ports
    origins = {f"http://{authority(n, p)}" for n in names for p in ports}
    origins |= {o.strip() for o in sec.origins.split(",") if o.strip()}
    loopback = bound is not None and is_loopback(bound)

    def opened(value: str) -> bool:
        return loopback if value == "auto" else value == "true"

    return Guard(
        tokens=None if sec.open else TokenFile(tokens_path(settings)),
        hosts=frozenset(names),
        origins=frozenset(origins),
        open_ingress=opened(sec.open_ingress),
        open_inference=opened(sec.open_inference),
        open_all=sec.open,
    )


def refuse(status: int, reason: str, **headers: str) -> web.Response:
    """The guard's answer, through the one error table (``infra.http.error_answer``)."""
    return error_response(KnflowError(reason, status=status), headers)


def guard_middleware(guard: Guard) -> Any:
    """The middleware: one decision per request, before the handler runs."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not guard.host_allowed(request.headers.get("Host")):
            return refuse(421, f"this server does not answer to host {request.headers.get('Host')!r}")
        route = request.match_info.route
        level = "open" if isinstance(route.resource, web.StaticResource) else access_of(route.handler)
        if level is None:
            if request.match_info.http_exception is not None:  # 404/405: the inner middleware answers it in JSON
                return await handler(request)
            return refuse(500, f"route {request.method} {request.path} has no access decision")
        if request.method not in SAFE_METHODS:  # open routes too: a sign-in must not come from a page elsewhere
            problem = _browser_problem(guard, request, typed=level != "inference")
            if problem:
                return problem
        role = guard.needed(level, request.method)
        principal = guard.principal(request)
        request[scope_key()] = scope_for(guard, principal)
        if role is None:
            return await handler(request)
        if principal is None:
            return refuse(401, "a bearer token is needed (knflow token create)", **{"WWW-Authenticate": "Bearer"})
        if not principal.can(role):
            return refuse(403, f"token {principal.name!r} is a {principal.role}; this needs {role}")
        if level == "platform" and request.method not in SAFE_METHODS and ALL not in principal.namespaces:
            return refuse(403, f"token {principal.name!r} acts for some namespaces; this needs an admin of all ('*')")
        request[PRINCIPAL] = principal
        return await handler(request)

    return check


def _browser_problem(guard: Guard, request: web.Request, typed: bool) -> web.Response | None:
    """Why a state change may have come from a page elsewhere (None when it cannot have). ``typed``: whether the
    content type matters (not for inference, which changes nothing and which ``curl -d`` sends as a form)."""
    has_body = typed and request.can_read_body  # a length above 0, or chunked
    problem = change_problem(guard, request.headers.get, has_body)
    return refuse(*problem) if problem else None


def change_problem(guard: Guard, header: Callable[[str], str | None], has_body: bool) -> tuple[int, str] | None:
    """The status and reason to refuse a state change that may come from a page elsewhere (None: it cannot have).
    ``header`` looks a request header up by its lower-case name."""
    origin = header("origin")
    if not guard.origin_allowed(origin, header("host")):
        return 403, f"origin {origin!r} may not change anything here"
    if header("sec-fetch-site") == "cross-site":
        return 403, "a cross-site request may not change anything here"
    if header("authorization") or header("ce-specversion"):  # a page elsewhere cannot add these without a preflight
        return None
    ctype = (header("content-type") or "").split(";", 1)[0].strip().lower()
    if has_body and ctype not in CHANGE_TYPES:
        return 415, f"content type {ctype or 'none'!r} is not accepted for a change; send JSON"
    return None


def scope_for(guard: Guard, principal: Principal | None) -> Scope:
    """The namespaces a caller acts for: its token's; every one where no token is asked at all; only ``default``
    for a caller without a token on a route open to it (open inference reaches ``default``'s models only)."""
    if principal is not None:
        return Scope(principal.namespaces)
    return EVERY if guard.tokens is None else ANONYMOUS


def scope_of_headers(guard: Guard, header: Callable[[str], str | None]) -> Scope:
    """``scope_for`` the caller of a request a fast path answers itself (``header`` looks a lower-case name up)."""
    token = bearer_token(header("authorization"))
    return scope_for(guard, guard.tokens.verify(token) if guard.tokens is not None else None)


def bearer_token(authorization: str | None) -> str:
    """The token an ``Authorization: Bearer`` header carries ('' when there is none or the scheme is another)."""
    value = authorization or ""
    return value[7:].strip() if value[:7].lower() == "bearer " else ""


def principal_of(request: web.Request) -> Principal | None:
    """The caller the middleware authenticated (None on an open route or when no token is asked)."""
    return request.get(PRINCIPAL)


def server_middlewares(settings: Settings, json_prefix: str = "/") -> list[Any]:
    """The middlewares every knflow server runs, in order: the guard (who may call what), then the one place
    errors become ``{"error": reason}`` answers."""
    return [guard_middleware(guard_for(settings)), error_middleware(json_prefix)]
