"""TLS for tests of ``https://`` paths: a throwaway certificate authority (``trustme``), its server and client sides."""

from __future__ import annotations

import ssl

import pytest


def tls_contexts(host: str = "127.0.0.1") -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for ``host`` and a client context that trusts it; skips without trustme."""
    trustme = pytest.importorskip("trustme", reason="trustme makes the self-signed certificate this test needs")
    authority = trustme.CA()
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(host).configure_cert(served)
    trusted = ssl.create_default_context()
    authority.configure_trust(trusted)
    return served, trusted
