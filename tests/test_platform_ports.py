"""``knflow up`` refuses a port something already answers on, asking over the bound address's own family."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from infra.errors import Unavailable
from knflow.platform import COMPONENTS, _check_port_free
from tests.ipv6 import needs_ipv6_loopback
from tests.settings_env import settings_in

BROKER = next(c for c in COMPONENTS if c.name == "broker")


@pytest.mark.parametrize(
    ("host", "family", "written"),
    [
        pytest.param("::1", socket.AF_INET6, "[::1]", marks=needs_ipv6_loopback),
        ("127.0.0.1", socket.AF_INET, "127.0.0.1"),
    ],
)
def test_a_port_taken_on_the_bound_address_is_refused_naming_it_as_a_url_writes_it(
    tmp_path: Path, host: str, family: socket.AddressFamily, written: str
) -> None:
    with socket.socket(family) as taken:
        taken.bind((host, 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = settings_in(tmp_path, host=host, broker_port=str(port))
        with pytest.raises(Unavailable, match=re.escape(f"port {written}:{port} for the broker is in use")):
            _check_port_free(settings, BROKER)
    _check_port_free(settings, BROKER)  # closed: free again
