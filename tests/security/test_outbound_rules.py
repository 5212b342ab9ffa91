"""The outbound allow-list rule by rule, without a server: which targets a trigger, dead-letter sink or notify hook
may name (``make mutate MODULES=infra/outbound.py`` runs these against the mutants)."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from infra.errors import InvalidRequest
from infra.outbound import Outbound
from tests.settings_env import settings_in


def outbound(tmp_path: Path, **env: str) -> Outbound:
    return Outbound(settings_in(tmp_path, **env))


def refusal(what: str, url: str) -> str:
    return re.escape(
        f"{what} {url!r} is not an allowed target: add its host to security.outbound (KNFLOW_SECURITY_OUTBOUND) "
        "to let knflow call it"
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/",
        "http://127.9.9.9/",
        "http://[::1]:9000/sink",
        "http://localhost:8181/",
        "http://LOCALHOST/",
        "https://localhost/",
    ],
)
async def test_this_machines_loopback_is_allowed_by_default(tmp_path: Path, url: str) -> None:
    await outbound(tmp_path).check(url, "trigger subscriber")


@pytest.mark.parametrize("url", ["http://10.0.0.7/", "http://[fd00::7]/", "http://192.168.1.1:80/"])
async def test_any_other_address_is_refused_until_listed(tmp_path: Path, url: str) -> None:
    with pytest.raises(InvalidRequest, match=refusal("trigger subscriber", url)):
        await outbound(tmp_path).check(url, "trigger subscriber")


async def test_a_name_that_does_not_resolve_is_refused_unless_listed(tmp_path: Path) -> None:
    url = "http://sink.invalid:8080/"
    with pytest.raises(InvalidRequest, match=refusal("dead-letter sink", url)):
        await outbound(tmp_path).check(url, "dead-letter sink")
    await outbound(tmp_path, security_outbound="Sink.Invalid").check(url, "dead-letter sink")
    await outbound(tmp_path, security_outbound="sink.invalid:8080").check(url, "dead-letter sink")
    with pytest.raises(InvalidRequest):  # a host:port entry allows that port only
        await outbound(tmp_path, security_outbound="sink.invalid:9090").check(url, "dead-letter sink")
    with pytest.raises(InvalidRequest):
        await outbound(tmp_path, security_outbound="sink.invalid:8080").check("http://sink.invalid/", "sink")


async def test_listed_networks_allow_every_address_in_them(tmp_path: Path) -> None:
    listed = outbound(tmp_path, security_outbound=" 10.0.0.0/8 , ,fd00::/64,192.168.1.5")
    for url in ("http://10.0.0.7/", "http://10.255.0.1:9/", "http://[fd00::7]/", "http://192.168.1.5/"):
        await listed.check(url, "trigger subscriber")
    for url in ("http://11.0.0.1/", "http://[fd01::7]/", "http://192.168.1.6/"):
        with pytest.raises(InvalidRequest):
            await listed.check(url, "trigger subscriber")
    assert listed.names == {"localhost", "127.0.0.1"}  # addresses and networks are networks, not names


async def test_a_host_network_entry_need_not_be_strict(tmp_path: Path) -> None:
    await outbound(tmp_path, security_outbound="10.1.2.3/8").check("http://10.200.0.1/", "trigger subscriber")


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://169.254.0.1:80/",
        "http://[fe80::1]/",
        "http://[fd00:ec2::254]/",
        "http://100.100.100.200/",
    ],
)
async def test_link_local_and_metadata_addresses_are_refused_even_when_listed(tmp_path: Path, url: str) -> None:
    everything = outbound(tmp_path, security_outbound="0.0.0.0/0,::/0,169.254.169.254,100.100.100.200")
    reason = re.escape(f"trigger subscriber {url!r} is a link-local or metadata address, which knflow never calls")
    with pytest.raises(InvalidRequest, match=reason):
        await everything.check(url, "trigger subscriber")


async def test_a_name_is_refused_when_it_resolves_to_a_metadata_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    loop = asyncio.get_running_loop()

    async def resolve(host: str, port: object, **kw: object) -> list:
        assert host == "metadata.internal" and kw.get("type") == socket.SOCK_STREAM
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", 0))]

    monkeypatch.setattr(loop, "getaddrinfo", resolve)
    listed = outbound(tmp_path, security_outbound="metadata.internal")
    with pytest.raises(InvalidRequest, match="link-local or metadata"):
        await listed.check("http://metadata.internal/", "notify target")
    await listed.check("http://127.0.0.1:8080/", "notify target")  # an address is itself: nothing is looked up


async def test_a_name_is_allowed_when_every_address_it_resolves_to_is_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    answers = {
        "inside.lan": ["10.0.0.1", "fe80::1%eth0"],  # a scoped link-local address among them: refused
        "pair.lan": ["10.0.0.1", "10.0.0.2"],
        "split.lan": ["10.0.0.1", "11.0.0.1"],
    }

    async def resolve(host: str, port: object, **kw: object) -> list:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, 0)) for ip in answers[host]]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolve)
    listed = outbound(tmp_path, security_outbound="10.0.0.0/8")
    await listed.check("http://pair.lan/", "trigger subscriber")
    with pytest.raises(InvalidRequest, match="link-local or metadata"):
        await listed.check("http://inside.lan/", "trigger subscriber")
    with pytest.raises(InvalidRequest, match="not an allowed target"):
        await listed.check("http://split.lan/", "trigger subscriber")  # one address outside the list


@pytest.mark.parametrize("url", ["not a url", "http:///path", "file:///etc/passwd", ""])
async def test_a_url_without_a_host_is_refused_naming_it(tmp_path: Path, url: str) -> None:
    with pytest.raises(InvalidRequest, match=re.escape(f"trigger subscriber {url!r} names no host")):
        await outbound(tmp_path).check(url, "trigger subscriber")


@pytest.mark.parametrize(
    ("bound", "named"),
    [("Xen-7.LAN", "xen-7.lan"), ("[FD00::1]", "fd00::1"), ("10.1.2.3", "10.1.2.3")],
)
async def test_the_platforms_own_host_is_allowed(tmp_path: Path, bound: str, named: str) -> None:
    allowed = outbound(tmp_path, host=bound)
    assert allowed.names == {"localhost", named}


@pytest.mark.parametrize("bound", ["0.0.0.0", "::", "[::]", ""])
async def test_a_platform_on_every_interface_adds_no_name(tmp_path: Path, bound: str) -> None:
    assert outbound(tmp_path, host=bound).names == {"localhost"}
    with pytest.raises(InvalidRequest):
        await outbound(tmp_path, host=bound).check("http://0.0.0.0:8080/", "trigger subscriber")


async def test_an_ipv6_entry_is_written_as_a_url_writes_it(tmp_path: Path) -> None:
    url = "http://[fd00::7]:8080/sink"
    for entry in ("fd00::7", "[fd00::7]", "[FD00::7]:8080", "fd00::/64"):
        await outbound(tmp_path, security_outbound=entry).check(url, "trigger subscriber")
    for entry in ("[fd00::7]:9090", "fd00::8", "fd00::7:8080"):  # another port, another address, unbracketed port
        with pytest.raises(InvalidRequest, match=refusal("trigger subscriber", url)):
            await outbound(tmp_path, security_outbound=entry).check(url, "trigger subscriber")
