"""Namespaces rule by rule, without servers: names, artifact prefixes, which namespace a request addresses, a
namespace's view of the artifact store, and model names across namespaces (``make mutate
MODULES=infra/namespaces.py`` runs these against the mutants)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aiohttp.test_utils import make_mocked_request

from infra.errors import InvalidRequest, NotFound
from infra.namespaces import (
    ANONYMOUS,
    EVERY,
    NamespacedStore,
    Scope,
    addressed,
    check,
    of_extension,
    prefix,
    qualified,
    require,
    scope_key,
    scope_of,
    scoped,
    split,
)
from infra.store import ObjectInfo, open_store


@pytest.mark.parametrize("name", ["default", "team-a", "a", "a1", "1a", "a" * 63])
def test_a_dns_label_names_a_namespace(name: str) -> None:
    assert check(name) == name


@pytest.mark.parametrize("name", ["Team", "team_a", "-a", "a-", "", "a" * 64, "a/b", "*", None, 7])
def test_anything_else_is_refused_naming_the_rule(name: object) -> None:
    reason = f"namespace {name!r} must be a DNS label (lowercase letters, digits, '-')"
    with pytest.raises(InvalidRequest, match=f"^{re.escape(reason)}$"):
        check(name)


def test_default_keeps_the_layout_and_another_namespace_lives_under_its_prefix() -> None:
    assert prefix("default") == ""
    assert prefix("team-a") == "namespaces/team-a/"
    with pytest.raises(InvalidRequest):
        prefix("../x")


def test_an_event_without_a_namespace_is_defaults() -> None:
    assert of_extension("team-a") == "team-a"
    for none in (None, ""):
        assert of_extension(none) == "default"


def test_a_scope_sees_its_namespaces_or_all_with_a_star() -> None:
    team = Scope(("team-b", "team-c"))
    assert team.sees("team-b") and team.sees("team-c") and not team.sees("team-a") and not team.sees("default")
    assert EVERY.sees("anything") and ANONYMOUS.sees("default") and not ANONYMOUS.sees("team-a")


@pytest.mark.parametrize(
    ("namespaces", "home"),
    [(("team-b", "team-c"), "team-b"), (("team-b", "default"), "default"), (("*",), "default"), ((), "default")],
)
def test_a_request_naming_no_namespace_addresses_default_when_the_caller_acts_for_it_else_its_first(
    namespaces: tuple[str, ...], home: str
) -> None:
    assert Scope(namespaces).home == home


def request(scope: Scope | None, path: str = "/api/runs", **headers: str):
    made = make_mocked_request("GET", path, headers=headers)
    if scope is not None:
        made[scope_key()] = scope
    return made


def test_the_callers_scope_is_what_the_guard_recorded_or_every_namespace_without_a_guard() -> None:
    assert scope_of(request(Scope(("team-a",)))) == Scope(("team-a",))
    assert scope_of(request(None)) == EVERY
    assert scope_key() is scope_key()  # one key for the guard that writes it and every reader


@pytest.mark.parametrize(
    ("scope", "path", "headers", "namespace"),
    [
        (Scope(("team-a", "team-b")), "/api/runs", {}, "team-a"),
        (Scope(("team-a", "team-b")), "/api/runs?namespace=team-b", {}, "team-b"),
        (Scope(("team-a", "team-b")), "/api/runs", {"X-Knflow-Namespace": "team-b"}, "team-b"),
        (Scope(("team-a", "team-b")), "/api/runs?namespace=team-a", {"X-Knflow-Namespace": "team-b"}, "team-a"),
        (EVERY, "/api/runs?namespace=team-z", {}, "team-z"),
        (EVERY, "/api/runs", {}, "default"),
        (ANONYMOUS, "/api/runs", {}, "default"),
    ],
)
def test_a_request_addresses_the_namespace_it_names_query_first_else_the_callers_home(
    scope: Scope, path: str, headers: dict[str, str], namespace: str
) -> None:
    assert addressed(request(scope, path, **headers)) == namespace


def test_a_namespace_the_caller_does_not_act_for_is_not_found_as_if_it_did_not_exist() -> None:
    with pytest.raises(NotFound, match=r"^no namespace 'team-b'$"):
        addressed(request(Scope(("team-a",)), "/api/runs?namespace=team-b"))
    with pytest.raises(NotFound, match=r"^no namespace 'team-b'$"):
        addressed(request(Scope(("team-a",)), "/api/runs", **{"X-Knflow-Namespace": "team-b"}))
    with pytest.raises(NotFound, match=r"^no namespace 'default'$"):
        addressed(request(Scope(("team-a", "team-b")), "/api/runs?namespace=default"))
    with pytest.raises(InvalidRequest, match="DNS label"):
        addressed(request(EVERY, "/api/runs?namespace=Team"))


def test_a_resource_of_another_namespace_than_the_one_addressed_is_not_found() -> None:
    team = request(Scope(("team-a", "team-b")), "/api/runs?namespace=team-b")
    require(team, "team-b", "run r1")  # the addressed namespace's own: no error
    with pytest.raises(NotFound, match=r"^run r1$"):
        require(team, "team-a", "run r1")  # one the caller acts for, but not the one it addressed


def test_a_namespace_sees_the_store_in_its_own_layout_and_nothing_of_anothers(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}")
    assert scoped(store, "default") is store
    team, other = scoped(store, "team-a"), scoped(store, "team-b")
    assert isinstance(team, NamespacedStore) and team.namespace == "team-a" and team.url == store.url

    info = team.put("raw/iris/a.csv", b"1,2\n", content_type="text/csv", metadata={"by": "ci"})
    assert info.key == "raw/iris/a.csv"
    assert store.stat("namespaces/team-a/raw/iris/a.csv").content_type == "text/csv"
    assert store.stat("namespaces/team-a/raw/iris/a.csv").metadata == {"by": "ci"}
    assert store.get("namespaces/team-a/raw/iris/a.csv") == b"1,2\n" and not store.exists("raw/iris/a.csv")
    assert team.exists("raw/iris/a.csv") and not other.exists("raw/iris/a.csv")
    assert team.get("raw/iris/a.csv") == b"1,2\n"
    assert team.stat("raw/iris/a.csv").key == "raw/iris/a.csv"
    with team.open("raw/iris/a.csv") as stream:
        assert stream.read() == b"1,2\n"
    assert team.download("raw/iris/a.csv", tmp_path / "copy.csv").key == "raw/iris/a.csv"
    assert (tmp_path / "copy.csv").read_bytes() == b"1,2\n"
    assert [i.key for i in team.list("raw/")] == ["raw/iris/a.csv"] and list(other.list()) == []
    assert [i.key for i in team.list()] == ["raw/iris/a.csv"]

    assert team.put_if_absent("state.json", b"{}", content_type="application/json").key == "state.json"
    assert team.put_if_absent("state.json", b"{}") is None
    assert team.stat("state.json").content_type == "application/json"
    data, version = team.get_versioned("state.json")
    assert data == b"{}" and store.get("namespaces/team-a/state.json") == b"{}"
    assert team.put_if_match("state.json", b"[]", version, content_type="text/plain").key == "state.json"
    assert team.put_if_match("state.json", b"{}", version) is None  # the version moved on
    assert team.get("state.json") == b"[]" and team.stat("state.json").content_type == "text/plain"

    team.delete("raw/iris/a.csv")
    assert not store.exists("namespaces/team-a/raw/iris/a.csv")


def test_a_namespaces_listener_hears_its_own_puts_in_its_own_layout(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}")
    heard: list[ObjectInfo] = []
    scoped(store, "team-a").add_listener(heard.append)
    scoped(store, "team-b").put("raw/x.csv", b"b")
    store.put("raw/y.csv", b"default")
    scoped(store, "team-a").put("raw/z.csv", b"a")
    assert [i.key for i in heard] == ["raw/z.csv"]


def test_a_model_is_keyed_by_its_namespace_except_in_default() -> None:
    assert qualified("default", "digits") == "digits"
    assert qualified("team-a", "digits") == "team-a/digits"
    with pytest.raises(NotFound, match=r"^model 'team-b/digits' is not deployed$"):
        qualified("team-a", "team-b/digits")  # a slash cannot reach another namespace's model
    assert split("team-a/digits") == ("team-a", "digits")
    assert split("digits") == ("default", "digits")
    assert split(qualified("team-a", "m")) == ("team-a", "m")
