"""Tokens rule by rule: roles and namespaces, the token file, which token a process calls with, the machine user's
admin token, and the platform's own servers that get it (``make mutate MODULES=infra/auth.py`` runs these against
the mutants)."""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from infra import auth
from infra.auth import (
    LOCAL_ADMIN,
    PREFIX,
    Principal,
    TokenFile,
    admin_token_path,
    auth_headers,
    check_namespace,
    client_token,
    ensure_local_admin,
    local_admin_headers,
    own_credentials,
    tokens_path,
)
from infra.errors import Conflict, InvalidRequest, NotFound
from tests.settings_env import settings_in


@pytest.mark.parametrize(
    ("role", "may"),
    [("viewer", {"viewer"}), ("editor", {"viewer", "editor"}), ("admin", {"viewer", "editor", "admin"})],
)
def test_a_role_may_do_what_it_and_every_role_below_it_may(role: str, may: set[str]) -> None:
    caller = Principal("t", role, ("default",))
    assert {r for r in ("viewer", "editor", "admin") if caller.can(r)} == may


def test_a_caller_sees_its_namespaces_or_every_one_with_a_star() -> None:
    team = Principal("t", "viewer", ("team-a", "team-b"))
    assert team.sees("team-a") and team.sees("team-b") and not team.sees("team-c") and not team.sees("*")
    assert Principal("t", "viewer", ("*",)).sees("anything")


@pytest.mark.parametrize("namespace", ["default", "team-a", "a", "*", "a1-b2"])
def test_a_namespace_is_a_dns_label_or_a_star(namespace: str) -> None:
    assert check_namespace(namespace) == namespace


@pytest.mark.parametrize("namespace", ["Team", "team_a", "-a", "a-", "", "**", "a.b"])
def test_anything_else_is_refused_naming_it(namespace: str) -> None:
    reason = f"namespace {namespace!r} must be a DNS label (lowercase letters, digits, '-') or '*'"
    with pytest.raises(InvalidRequest, match=f"^{re.escape(reason)}$"):
        check_namespace(namespace)


def test_a_token_is_long_random_prefixed_and_only_its_digest_is_kept(tmp_path: Path) -> None:
    tokens = TokenFile(tmp_path / "deep" / "tokens.json")
    one, two = tokens.create("ci", "editor", ("team-a",)), tokens.create("cd", "viewer", ("*",))
    assert one.startswith(PREFIX) and len(one) == len(PREFIX) + 43 and one != two  # 32 random bytes, base64
    stored = (tmp_path / "deep" / "tokens.json").read_text()
    assert one not in stored and one[len(PREFIX) :] not in stored
    assert stored.startswith('{\n  "ci": {\n    "sha256": "')  # indented: a file people read
    assert (tmp_path / "deep" / "tokens.json").stat().st_mode & 0o777 == 0o600
    assert tokens.verify(one) == Principal("ci", "editor", ("team-a",))
    assert tokens.verify(two) == Principal("cd", "viewer", ("*",))


def test_the_token_list_names_each_token_in_order_without_its_digest(tmp_path: Path) -> None:
    tokens = TokenFile(tmp_path / "tokens.json")
    assert tokens.list() == []
    tokens.create("zeta", "viewer", ("team-a",))
    tokens.create("alpha", "admin", ("team-a", "team-b"))
    listed = tokens.list()
    assert [t["name"] for t in listed] == ["alpha", "zeta"]
    assert {k for t in listed for k in t} == {"name", "role", "namespaces", "created"}
    assert listed[0]["role"] == "admin" and listed[0]["namespaces"] == ["team-a", "team-b"]
    created = datetime.fromisoformat(listed[0]["created"])
    assert created.utcoffset() == timedelta(0) and abs(datetime.now(UTC) - created) < timedelta(minutes=1)


@pytest.mark.parametrize(
    ("name", "role", "namespaces", "reason"),
    [
        ("CI", "editor", ("a",), "token name 'CI' must be a DNS label (lowercase letters, digits, '-')"),
        ("ci", "owner", ("a",), "role 'owner' is not one of viewer, editor, admin"),
        ("ci", "editor", (), "a token needs at least one namespace (or '*' for all)"),
        ("ci", "editor", ("a", "B"), "namespace 'B' must be a DNS label (lowercase letters, digits, '-') or '*'"),
    ],
)
def test_a_token_that_cannot_be_made_is_refused_with_the_reason(
    tmp_path: Path, name: str, role: str, namespaces: tuple[str, ...], reason: str
) -> None:
    tokens = TokenFile(tmp_path / "tokens.json")
    with pytest.raises(InvalidRequest, match=f"^{re.escape(reason)}$"):
        tokens.create(name, role, namespaces)
    assert tokens.list() == []


def test_a_name_is_taken_until_its_token_is_revoked(tmp_path: Path) -> None:
    tokens = TokenFile(tmp_path / "tokens.json")
    first = tokens.create("ci", "editor", ("a",))
    with pytest.raises(Conflict, match=r"^a token named 'ci' exists; revoke it first$"):
        tokens.create("ci", "viewer", ("a",))
    tokens.revoke("ci")
    assert tokens.verify(first) is None and tokens.list() == []
    second = tokens.create("ci", "viewer", ("a",))
    assert tokens.verify(second) == Principal("ci", "viewer", ("a",))
    with pytest.raises(NotFound, match=r"^no token named 'cd'$"):
        tokens.revoke("cd")


def test_revoking_one_token_leaves_the_others(tmp_path: Path) -> None:
    tokens = TokenFile(tmp_path / "tokens.json")
    kept, gone = tokens.create("kept", "viewer", ("a",)), tokens.create("gone", "viewer", ("a",))
    tokens.revoke("gone")
    assert tokens.verify(kept) is not None and tokens.verify(gone) is None


@pytest.mark.parametrize("token", ["", "knf", "nope_abc", "knf_not-issued", "Bearer knf_x"])
def test_anything_but_an_issued_token_is_nobody(tmp_path: Path, token: str) -> None:
    tokens = TokenFile(tmp_path / "tokens.json")
    tokens.create("ci", "editor", ("a",))
    assert tokens.verify(token) is None


def test_a_token_file_changed_by_another_process_is_read_again(tmp_path: Path) -> None:
    mine, theirs = TokenFile(tmp_path / "tokens.json"), TokenFile(tmp_path / "tokens.json")
    token = mine.create("ci", "editor", ("a",))
    assert theirs.verify(token) is not None
    time.sleep(0.01)  # a later modification time, on any file system this runs on
    mine.revoke("ci")
    assert theirs.verify(token) is None and theirs.list() == []
    (tmp_path / "tokens.json").unlink()
    assert theirs.list() == [] and theirs.verify(token) is None


def test_a_token_file_that_is_not_json_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text("{not json")
    with pytest.raises(InvalidRequest, match=re.escape(f"token file {path} is not valid JSON")):
        TokenFile(path).verify(PREFIX + "x")
    path.write_bytes(orjson.dumps(["a", "list"]))
    assert TokenFile(path).list() == []  # JSON, but not a table of tokens: none


def test_the_token_file_is_in_the_data_directory_unless_placed_elsewhere(tmp_path: Path) -> None:
    assert tokens_path(settings_in(tmp_path)) == tmp_path / "tokens.json"
    elsewhere = tmp_path / "etc" / "knflow-tokens.json"
    assert tokens_path(settings_in(tmp_path, security_tokens_file=str(elsewhere))) == elsewhere
    assert admin_token_path(settings_in(tmp_path)) == tmp_path / "admin.token"


def test_a_process_calls_with_its_configured_token_else_the_local_admins_else_none(tmp_path: Path) -> None:
    assert client_token(settings_in(tmp_path)) is None and auth_headers(settings_in(tmp_path)) == {}
    (tmp_path / "admin.token").write_text("  \n")
    assert client_token(settings_in(tmp_path)) is None
    (tmp_path / "admin.token").write_text("knf_local\n")
    assert client_token(settings_in(tmp_path)) == "knf_local"
    assert auth_headers(settings_in(tmp_path)) == {"Authorization": "Bearer knf_local"}
    configured = settings_in(tmp_path, security_token="knf_given")
    assert client_token(configured) == "knf_given"
    assert auth_headers(configured) == {"Authorization": "Bearer knf_given"}


def test_the_machine_user_gets_an_admin_token_of_every_namespace_once(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    ensure_local_admin(settings)
    path = tmp_path / "admin.token"
    token = path.read_text()
    assert token.endswith("\n") and path.stat().st_mode & 0o777 == 0o600
    tokens = TokenFile(tmp_path / "tokens.json")
    assert tokens.verify(token.strip()) == Principal(LOCAL_ADMIN, "admin", ("*",))
    ensure_local_admin(settings)  # a valid one is kept
    assert path.read_text() == token
    assert local_admin_headers(settings) == {"Authorization": f"Bearer {token.strip()}"}


def test_a_lost_or_foreign_admin_token_is_replaced_and_the_old_one_revoked(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    ensure_local_admin(settings)
    path, tokens = tmp_path / "admin.token", TokenFile(tmp_path / "tokens.json")
    old = path.read_text().strip()
    path.unlink()  # lost: a new one, the old revoked
    ensure_local_admin(settings)
    new = path.read_text().strip()
    assert new != old and tokens.verify(old) is None and tokens.verify(new) is not None
    other = tokens.create("ci", "admin", ("*",))
    path.write_text(other)  # someone else's token in its place
    ensure_local_admin(settings)
    assert path.read_text().strip() not in (other, new)
    assert tokens.verify(other) is not None  # the other token is not the local admin's to revoke
    assert [t["name"] for t in tokens.list()] == ["ci", LOCAL_ADMIN]


def test_the_configured_token_does_not_stand_for_the_local_admins(tmp_path: Path) -> None:
    tokens = TokenFile(tmp_path / "tokens.json")
    given = tokens.create(LOCAL_ADMIN, "admin", ("*",))
    ensure_local_admin(settings_in(tmp_path, security_token=given))  # the file holds none yet: one is written
    written = (tmp_path / "admin.token").read_text().strip()
    assert written != given and tokens.verify(written) is not None and tokens.verify(given) is None


def test_an_open_platform_makes_no_token(tmp_path: Path) -> None:
    ensure_local_admin(settings_in(tmp_path, security_open="true"))
    assert not (tmp_path / "admin.token").exists() and not (tmp_path / "tokens.json").exists()
    assert local_admin_headers(settings_in(tmp_path, security_open="true")) == {}


def test_the_token_goes_to_every_server_of_the_platform_and_nowhere_else(tmp_path: Path) -> None:
    settings = settings_in(tmp_path, security_token="knf_t", host="10.1.2.3")
    credentials = own_credentials(settings)
    ports = (settings.broker_port, settings.functions_port, settings.gateway_port, settings.dashboard_port)
    for host in ("127.0.0.1", "localhost", "[::1]", "10.1.2.3"):
        for port in ports:
            assert credentials(f"http://{host}:{port}/x") == {"Authorization": "Bearer knf_t"}, (host, port)
    for url in (
        f"http://10.1.2.4:{settings.broker_port}/",
        f"http://127.0.0.1:{settings.grpc_port}/",
        "http://127.0.0.1/",
        "http://127.0.0.1:80/",
        f"http://example.com:{settings.broker_port}/",
    ):
        assert credentials(url) == {}, url
    assert own_credentials(settings_in(tmp_path))(f"http://127.0.0.1:{settings.broker_port}/") == {}  # no token


def test_the_admin_token_file_is_created_with_its_directory(tmp_path: Path) -> None:
    data = tmp_path / "not" / "there"
    ensure_local_admin(settings_in(data))
    assert (data / "admin.token").exists() and oct((data / "admin.token").stat().st_mode & 0o777) == "0o600"
    assert os.access(data / "tokens.json", os.R_OK)


def test_an_unchanged_token_file_is_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = TokenFile(tmp_path / "tokens.json")
    token = tokens.create("ci", "editor", ("a",))
    reads = []
    parse = orjson.loads
    monkeypatch.setattr(auth.orjson, "loads", lambda data: reads.append(1) or parse(data))
    other = TokenFile(tmp_path / "tokens.json")
    for _ in range(3):
        assert other.verify(token) is not None and tokens.verify(token) is not None
    assert len(reads) == 1  # the other instance's first read; the writer read its own write already


def test_a_url_is_read_once_however_often_it_is_asked_for_up_to_ten_thousand_urls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_in(tmp_path, security_token="knf_t")
    credentials = own_credentials(settings)
    read: list[str] = []
    split = auth.urlsplit
    monkeypatch.setattr(auth, "urlsplit", lambda url: read.append(url) or split(url))
    own = f"http://127.0.0.1:{settings.broker_port}/"
    for _ in range(3):
        assert credentials(own) == {"Authorization": "Bearer knf_t"}
    assert read == [own]
    for i in range(1, 10_000):
        credentials(f"http://example.com/{i}")
    late = "http://example.com/late"  # the 10,001st URL: answered, not remembered
    assert credentials(late) == {} and credentials(late) == {}
    assert read.count(late) == 2 and len(read) == 1 + 9_999 + 2


@pytest.mark.parametrize(("bound", "url_host"), [("[FD00::1]", "[fd00::1]"), ("Xen-7.LAN", "xen-7.lan")])
def test_the_token_goes_to_the_platforms_own_address_as_a_url_writes_it(
    tmp_path: Path, bound: str, url_host: str
) -> None:
    settings = settings_in(tmp_path, security_token="knf_t", host=bound)
    assert own_credentials(settings)(f"http://{url_host}:{settings.gateway_port}/") == {"Authorization": "Bearer knf_t"}


def test_the_admin_token_is_written_into_a_data_directory_not_made_yet(tmp_path: Path) -> None:
    data = tmp_path / "new" / "data"
    ensure_local_admin(settings_in(data, security_tokens_file=str(tmp_path / "tokens.json")))  # tokens elsewhere
    assert TokenFile(tmp_path / "tokens.json").verify((data / "admin.token").read_text().strip()) is not None
