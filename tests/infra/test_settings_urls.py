"""The platform's own URLs and listen addresses from ``host``: an IPv6 address in brackets, a wildcard bind reached
over loopback, and ``host`` accepted bare or bracketed."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.errors import ConfigError
from infra.settings import authority, load_settings, split_authority
from tests.settings_env import settings_in


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8180/"),
        ("10.1.2.3", "http://10.1.2.3:8180/"),
        ("::1", "http://[::1]:8180/"),
        ("[::1]", "http://[::1]:8180/"),
        ("FD00::5", "http://[fd00::5]:8180/"),
        ("knflow.lan", "http://knflow.lan:8180/"),
        ("0.0.0.0", "http://127.0.0.1:8180/"),  # bound everywhere: a client here calls loopback
        ("", "http://127.0.0.1:8180/"),
        ("::", "http://[::1]:8180/"),  # asyncio binds :: to IPv6 only: 127.0.0.1 would find nobody
        ("[::]", "http://[::1]:8180/"),
    ],
)
def test_a_servers_url_writes_its_host_as_a_url_authority(tmp_path: Path, host: str, url: str) -> None:
    settings = settings_in(tmp_path, host=host)
    assert settings.url(settings.broker_port, "/") == url
    assert settings.url(9000, "/functions/echo") == url.replace(":8180/", ":9000/functions/echo")


def test_settings_made_without_loading_still_give_urls_for_a_bracketed_host(tmp_path: Path) -> None:
    settings = settings_in(tmp_path).replace(host="[::1]")
    assert settings.url(8182) == "http://[::1]:8182"


@pytest.mark.parametrize(
    ("given", "kept"), [("::1", "::1"), ("[::1]", "::1"), ("[FD00::5]", "FD00::5"), ("::", "::"), ("", "")]
)
def test_an_ipv6_host_is_taken_bare_or_bracketed_and_kept_bare_for_binding(
    tmp_path: Path, given: str, kept: str
) -> None:
    assert settings_in(tmp_path, host=given).host == kept


def test_an_ipv6_host_in_the_config_file_is_taken_bracketed(tmp_path: Path) -> None:
    config = tmp_path / "knflow.toml"
    config.write_text('host = "[::1]"\n')
    assert load_settings({"KNFLOW_DATA_DIR": str(tmp_path)}, config_file=config).host == "::1"


@pytest.mark.parametrize("host", ["localhost:8080", "127.0.0.1:8180", "[localhost]", "[::1", "::1]", "::g", "[]"])
def test_a_host_with_a_port_or_stray_brackets_is_refused_naming_the_setting(tmp_path: Path, host: str) -> None:
    with pytest.raises(ConfigError, match=r"KNFLOW_HOST=.*expected an address or a name, without a port"):
        settings_in(tmp_path, host=host)


@pytest.mark.parametrize(
    ("host", "port", "written"),
    [("127.0.0.1", 80, "127.0.0.1:80"), ("::1", 8080, "[::1]:8080"), ("[::1]", 8080, "[::1]:8080"),
     ("knflow.lan", 1, "knflow.lan:1"), ("", 8080, ":8080")],
)  # fmt: skip
def test_an_authority_brackets_ipv6_and_parses_back(host: str, port: int, written: str) -> None:
    assert authority(host, port) == written
    assert split_authority(written) == (host.strip("[]"), port)


@pytest.mark.parametrize("address", ["::1:8080", "[::1]", "localhost", "localhost:http", "[::1]:"])
def test_an_address_without_a_port_or_an_unbracketed_ipv6_one_does_not_parse(address: str) -> None:
    with pytest.raises(ValueError, match=address.replace("[", r"\[").replace("]", r"\]")):
        split_authority(address)
