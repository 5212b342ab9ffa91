"""Tests that bind IPv6 loopback (``::1``) skip, saying why, on a machine that has none; everywhere else they run."""

from __future__ import annotations

import socket

import pytest


def has_ipv6_loopback() -> bool:
    """Whether a socket can bind ``::1`` here (a kernel without IPv6, or with it off, cannot)."""
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6_loopback = pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
