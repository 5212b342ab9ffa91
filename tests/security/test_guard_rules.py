"""The guard's rules one by one, without a server: which role a route needs, which names and origins a server
answers, when a change may come from a page elsewhere, which namespaces a caller acts for, and the policy a
platform's settings give (``make mutate MODULES=infra/guard.py`` runs these against the mutants)."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from infra.auth import Principal, TokenFile
from infra.guard import (
    LOOPBACK_NAMES,
    Access,
    Guard,
    access,
    access_of,
    bearer_token,
    change_problem,
    guard_for,
    is_loopback,
    refuse,
    scope_for,
    scope_of_headers,
)
from infra.namespaces import ANONYMOUS, EVERY, Scope
from tests.settings_env import settings_in


def headers(**given: str) -> Callable[[str], str | None]:
    """A lower-case header lookup, as ``change_problem`` and ``scope_of_headers`` take it."""
    return {name.replace("_", "-"): value for name, value in given.items()}.get


@pytest.mark.parametrize(
    ("level", "method", "role"),
    [
        ("open", "POST", None),
        ("viewer", "GET", "viewer"),
        ("viewer", "HEAD", "viewer"),
        ("editor", "GET", "viewer"),
        ("editor", "OPTIONS", "viewer"),
        ("editor", "POST", "editor"),
        ("editor", "DELETE", "editor"),
        ("admin", "GET", "viewer"),
        ("admin", "PUT", "admin"),
        ("platform", "GET", "viewer"),
        ("platform", "POST", "admin"),
        ("platform", "DELETE", "admin"),
    ],
)
def test_a_route_needs_its_level_to_change_and_a_viewer_to_read(level: Access, method: str, role: str | None) -> None:
    assert Guard(tokens=None).needed(level, method) == role


@pytest.mark.parametrize(("level", "opened", "closed"), [("ingress", None, "editor"), ("inference", None, "viewer")])
def test_ingress_and_inference_are_open_only_when_the_policy_opens_them(
    level: str, opened: str | None, closed: str
) -> None:
    flag = f"open_{level}"
    for method in ("GET", "POST"):
        assert Guard(tokens=None, **{flag: True}).needed(level, method) == opened
        assert Guard(tokens=None, **{flag: False}).needed(level, method) == closed


def test_a_guard_that_asks_no_token_needs_no_role_anywhere() -> None:
    guard = Guard(tokens=None, open_all=True, open_ingress=False, open_inference=False)
    for level in ("viewer", "editor", "admin", "platform", "ingress", "inference"):
        assert guard.needed(level, "POST") is None


def test_access_marks_functions_and_methods_and_an_unmarked_handler_has_no_decision() -> None:
    class Api:
        @access("editor")
        async def change(self) -> None: ...

        async def undecided(self) -> None: ...

    @access("viewer")
    async def read() -> None: ...

    assert access_of(Api().change) == "editor" and access_of(Api.change) == "editor"
    assert access_of(read) == "viewer"
    assert access_of(Api().undecided) is None


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("localhost", True),
        ("LOCALHOST:8181", True),
        (" 127.0.0.1:8181 ", True),
        ("[::1]:8181", True),
        ("[::1]", True),
        ("models.example", True),
        ("models.example:443", True),
        ("evil.example", False),
        ("evil.example:8181", False),
        ("127.0.0.2", False),
        ("[::2]:8181", False),
        ("localhost:", True),
        ("[::1]]:8181", False),  # nothing but a port may follow the brackets
        ("[::1]x", False),
        ("localhost:http", False),
        ("localhost:8181:8181", False),
        (":8181", False),
        ("", False),
        (None, False),
    ],
)
def test_a_server_answers_only_its_own_names_whatever_the_port(host: str | None, allowed: bool) -> None:
    guard = Guard(tokens=None, hosts=LOOPBACK_NAMES | {"models.example"})
    assert guard.host_allowed(host) is allowed


def test_a_bare_ipv6_host_without_brackets_is_compared_whole() -> None:
    assert Guard(tokens=None, hosts=frozenset({"::1"})).host_allowed("::1")  # two colons: no port to cut off


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        (None, None, True),  # not a browser
        ("http://127.0.0.1:8183", None, True),  # the platform's dashboard
        ("http://127.0.0.1:8181", "127.0.0.1:8181", True),  # the server's own page
        ("HTTP://127.0.0.1:8181", " 127.0.0.1:8181", True),
        ("http://localhost:8181", "LocalHost:8181", True),
        ("http://127.0.0.1:8181", None, False),
        ("http://127.0.0.1:8181", "127.0.0.1:8182", False),
        ("https://127.0.0.1:8181", "127.0.0.1:8181", False),
        ("http://evil.example", "127.0.0.1:8181", False),
        ("null", "127.0.0.1:8181", False),
    ],
)
def test_a_change_comes_from_no_browser_the_platform_or_the_server_itself(
    origin: str | None, host: str | None, allowed: bool
) -> None:
    assert Guard(tokens=None, origins=frozenset({"http://127.0.0.1:8183"})).origin_allowed(origin, host) is allowed


@pytest.mark.parametrize(
    ("sent", "has_body", "problem"),
    [
        ({"content_type": "application/json"}, True, None),
        ({"content_type": "Application/JSON; charset=utf-8"}, True, None),
        ({"content_type": "application/json; charset=utf-8; v=2"}, True, None),
        ({"content_type": "application/cloudevents+json"}, True, None),
        ({"content_type": "application/cloudevents-batch+json"}, True, None),
        ({"content_type": "application/yaml"}, True, None),
        ({"content_type": "application/x-yaml"}, True, None),
        ({"content_type": "application/octet-stream"}, True, None),
        (
            {"content_type": "text/plain"},
            True,
            (415, "content type 'text/plain' is not accepted for a change; send JSON"),
        ),
        ({"content_type": "application/x-www-form-urlencoded"}, True, 415),
        ({"content_type": "multipart/form-data; boundary=x"}, True, 415),
        ({}, True, (415, "content type 'none' is not accepted for a change; send JSON")),
        ({}, False, None),  # a DELETE without a body
        ({"content_type": "text/plain"}, False, None),
        ({"content_type": "text/plain", "authorization": "Bearer x"}, True, None),  # a page cannot add it
        ({"content_type": "text/plain", "ce_specversion": "1.0"}, True, None),
        ({"sec_fetch_site": "cross-site", "authorization": "Bearer x"}, False, 403),
        ({"sec_fetch_site": "same-origin", "content_type": "application/json"}, True, None),
        ({"origin": "http://evil.example", "authorization": "Bearer x"}, False, 403),
        ({"origin": "http://127.0.0.1:8181", "host": "127.0.0.1:8181", "content_type": "application/json"}, True, None),
    ],
)
def test_a_change_a_page_elsewhere_could_send_is_refused_with_the_reason(
    sent: dict[str, str], has_body: bool, problem: tuple[int, str] | int | None
) -> None:
    found = change_problem(Guard(tokens=None), headers(**sent), has_body)
    if isinstance(problem, int):
        assert found is not None and found[0] == problem
    else:
        assert found == problem


def test_the_origin_and_cross_site_refusals_name_what_was_refused() -> None:
    guard = Guard(tokens=None)
    assert change_problem(guard, headers(origin="http://evil.example"), False) == (
        403,
        "origin 'http://evil.example' may not change anything here",
    )
    assert change_problem(guard, headers(sec_fetch_site="cross-site"), False) == (
        403,
        "a cross-site request may not change anything here",
    )


def test_a_caller_acts_for_its_tokens_namespaces_every_one_without_tokens_and_default_when_anonymous() -> None:
    team = Principal("ci", "editor", ("team-a", "team-b"))
    assert scope_for(Guard(tokens=None), team) == Scope(("team-a", "team-b"))
    assert scope_for(Guard(tokens=None), None) == EVERY
    assert scope_for(Guard(tokens=TokenFile(Path("/nonexistent/tokens.json"))), None) == ANONYMOUS


def test_a_fast_path_reads_the_callers_scope_from_its_bearer_token(tmp_path: Path) -> None:
    tokens = TokenFile(tmp_path / "tokens.json")
    token = tokens.create("ci", "viewer", ("team-a",))
    guard = Guard(tokens=tokens)
    assert scope_of_headers(guard, headers(authorization=f"Bearer {token}")) == Scope(("team-a",))
    assert scope_of_headers(guard, headers(authorization=f"bearer  {token} ")) == Scope(("team-a",))
    for refused in (f"Basic {token}", f"Token: {token}", "Bearer not-a-token", token, ""):
        assert scope_of_headers(guard, headers(authorization=refused)) == ANONYMOUS
    assert scope_of_headers(guard, headers()) == ANONYMOUS
    assert scope_of_headers(Guard(tokens=None), headers(authorization=f"Bearer {token}")) == EVERY


def test_is_loopback_takes_addresses_bracketed_or_not_and_the_name_localhost() -> None:
    for host in ("127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "10.0.0.1", "::", "example.com", "localhost.example", ""):
        assert not is_loopback(host), host


def test_a_platform_on_loopback_answers_its_names_and_ports_and_opens_ingress_and_inference(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    guard = guard_for(settings)
    assert guard.hosts == LOOPBACK_NAMES | {settings.host}
    ports = (settings.broker_port, settings.functions_port, settings.gateway_port, settings.dashboard_port)
    for port in ports:
        assert f"http://localhost:{port}" in guard.origins and f"http://[::1]:{port}" in guard.origins
        assert f"http://127.0.0.1:{port}" in guard.origins
    assert all(origin.startswith("http://") and origin.rsplit(":", 1)[1].isdigit() for origin in guard.origins)
    assert guard.open_ingress and guard.open_inference and not guard.open_all
    assert guard.tokens is not None and guard.tokens.path == tmp_path / "tokens.json"


def test_a_platform_bound_elsewhere_asks_tokens_for_ingress_and_inference_unless_told(tmp_path: Path) -> None:
    guard = guard_for(settings_in(tmp_path, host="10.1.2.3"))
    assert "10.1.2.3" in guard.hosts and not guard.open_ingress and not guard.open_inference
    told = {"security_open_ingress": "true", "security_open_inference": "false"}
    guard = guard_for(settings_in(tmp_path, host="10.1.2.3", **told))
    assert guard.open_ingress and not guard.open_inference
    assert not guard_for(settings_in(tmp_path, security_open_inference="false")).open_inference


def test_a_platform_on_every_interface_answers_the_machines_own_names(tmp_path: Path) -> None:
    guard = guard_for(settings_in(tmp_path, host="0.0.0.0"))
    assert socket.gethostname().lower() in guard.hosts and socket.getfqdn().lower() in guard.hosts
    assert "0.0.0.0" not in guard.hosts and not guard.open_ingress


def test_more_names_origins_and_an_open_platform_come_from_the_security_settings(tmp_path: Path) -> None:
    settings = settings_in(
        tmp_path,
        security_hosts=" Models.Example , ,knflow.lan",
        security_origins="https://dash.example, ,",
        security_tokens_file=str(tmp_path / "elsewhere.json"),
    )
    guard = guard_for(settings)
    assert {"models.example", "knflow.lan"} <= guard.hosts and "" not in guard.hosts
    assert "https://dash.example" in guard.origins and "" not in guard.origins
    assert f"http://knflow.lan:{settings.gateway_port}" in guard.origins
    assert guard.tokens is not None and guard.tokens.path == tmp_path / "elsewhere.json"
    opened = guard_for(dataclasses.replace(settings, security=dataclasses.replace(settings.security, open=True)))
    assert opened.tokens is None and opened.open_all


def test_bearer_token_reads_only_the_bearer_scheme() -> None:
    assert bearer_token("Bearer knf_abc") == "knf_abc"
    assert bearer_token("BEARER   knf_abc  ") == "knf_abc"
    for value in ("Basic knf_abc", "Token: knf_abc", "knf_abc", "Bearer", "", None):
        assert bearer_token(value) == "", value


def test_a_refusal_is_an_error_answer_with_its_headers() -> None:
    answer = refuse(401, "a bearer token is needed", **{"WWW-Authenticate": "Bearer"})
    assert answer.status == 401 and answer.headers["WWW-Authenticate"] == "Bearer"
    assert answer.body == b'{"error":"a bearer token is needed"}'


@pytest.mark.parametrize("bound", ["::", "0.0.0.0", "[::]", ""])
def test_a_platform_on_every_interface_keeps_its_loopback_and_configured_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bound: str
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "Worker-7")
    monkeypatch.setattr(socket, "getfqdn", lambda: "Worker-7.Lab.Example")
    guard = guard_for(settings_in(tmp_path, host=bound, security_hosts="knflow.lan"))
    assert guard.hosts == LOOPBACK_NAMES | {"knflow.lan", "worker-7", "worker-7.lab.example"}


@pytest.mark.parametrize(
    ("bound", "names"),
    [
        ("Xen-7.LAN", {"xen-7.lan"}),
        ("[FD00::1]", {"fd00::1", "[fd00::1]"}),
        ("FD00::1", {"fd00::1", "[fd00::1]"}),
        ("::1", {"::1", "[::1]"}),
        ("10.1.2.3", {"10.1.2.3"}),
    ],
)
def test_a_platform_bound_to_one_address_answers_it_as_a_browser_writes_it(
    tmp_path: Path, bound: str, names: set[str]
) -> None:
    settings = settings_in(tmp_path, host=bound)
    guard = guard_for(settings)
    assert guard.hosts == LOOPBACK_NAMES | names
    assert guard.host_allowed(f"{max(names, key=len)}:8181")
    own = settings.url(settings.functions_port)  # what the platform's own clients call, and send as Host
    assert guard.host_allowed(urlsplit(own).netloc) and own in guard.origins
