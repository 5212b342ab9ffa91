"""Free ports for tests and local services: free on both loopbacks, so a server bound to ::1 alone is not handed its
port again for 127.0.0.1 (parallel test workers start servers on either)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

import infra.localservices as localservices
from infra.localservices import free_platform_ports, free_port
from tests.ipv6 import has_ipv6_loopback, needs_ipv6_loopback


@pytest.fixture
def held_on_ipv6_only() -> Iterator[int]:
    """A port a listener holds on ::1 while 127.0.0.1 has it free."""
    for _ in range(50):
        with socket.socket(socket.AF_INET6) as v6:
            v6.bind(("::1", 0))
            port = v6.getsockname()[1]
            with socket.socket() as v4:
                try:
                    v4.bind(("127.0.0.1", port))
                except OSError:
                    continue
            v6.listen()
            yield port
            return
    pytest.fail("no port free on 127.0.0.1 that ::1 could hold")


@needs_ipv6_loopback
def test_a_port_held_on_ipv6_loopback_is_not_handed_out(
    held_on_ipv6_only: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    offered = [held_on_ipv6_only]  # the kernel's first pick for 127.0.0.1 is the port ::1 holds

    class Steered(socket.socket):
        def bind(self, address):  # type: ignore[no-untyped-def]
            if self.family == socket.AF_INET and address == ("127.0.0.1", 0) and offered:
                address = ("127.0.0.1", offered.pop())
            return super().bind(address)

    monkeypatch.setattr(localservices.socket, "socket", Steered)
    port = free_port()
    assert not offered and port != held_on_ipv6_only
    offered.append(held_on_ipv6_only)
    ports = free_platform_ports()
    assert held_on_ipv6_only not in {int(p) for p in ports.values()}


def test_free_ports_bind_on_both_loopbacks_and_differ() -> None:
    ports = [int(p) for p in free_platform_ports().values()]
    assert len(set(ports)) == len(ports) == 5
    for port in [*ports, free_port()]:
        loopbacks = ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1"))
        for family, host in loopbacks[: 2 if has_ipv6_loopback() else 1]:
            with socket.socket(family) as sock:
                sock.bind((host, port))
