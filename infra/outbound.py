"""Where knflow's servers may send on a client's behalf: trigger subscribers and dead-letter sinks.

Allowed by default: this machine's loopback addresses and the platform's own host; more with
``security.outbound`` (host names, ``host:port`` or CIDRs). Link-local and cloud metadata addresses are refused
even when listed, after resolving the name, so a trigger cannot point the broker at them (server-side request
forgery).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from infra.errors import InvalidRequest
from infra.settings import Settings, authority

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: Never a target: link-local (cloud metadata services live there) and the metadata addresses themselves.
FORBIDDEN: tuple[Network, ...] = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("fd00:ec2::254/128"),
    ipaddress.ip_network("100.100.100.200/32"),  # Alibaba Cloud's metadata service
)
LOOPBACK: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


class Outbound:
    """The allow-list of one platform."""

    def __init__(self, settings: Settings):
        entries = [e.strip().lower() for e in settings.security.outbound.split(",") if e.strip()]
        self.networks: list[Network] = list(LOOPBACK)
        self.names: set[str] = {"localhost"}
        if settings.own_host is not None:
            self.names.add(settings.own_host)
        for entry in entries:
            try:  # an address or network, an IPv6 one bare or bracketed as a URL writes it
                self.networks.append(ipaddress.ip_network(entry.removeprefix("[").removesuffix("]"), strict=False))
            except ValueError:
                self.names.add(entry)  # a name, or host:port ([v6]:port, as a URL writes it)

    async def check(self, url: str, what: str) -> None:
        """Refuse ``url`` (``InvalidRequest`` naming ``what``) unless it is an allowed, safe target."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if not host:
            raise InvalidRequest(f"{what} {url!r} names no host")
        addresses = await _resolve(host)
        if any(ip in net for ip in addresses for net in FORBIDDEN):
            raise InvalidRequest(f"{what} {url!r} is a link-local or metadata address, which knflow never calls")
        named = host in self.names or (parts.port is not None and authority(host, parts.port) in self.names)
        listed = addresses and all(any(ip in net for net in self.networks) for ip in addresses)
        if not (named or listed):
            raise InvalidRequest(
                f"{what} {url!r} is not an allowed target: add its host to security.outbound "
                "(KNFLOW_SECURITY_OUTBOUND) to let knflow call it"
            )


async def _resolve(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses ``host`` stands for (a literal address is itself; an unknown name has none)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return []
    return [ipaddress.ip_address(info[4][0]) for info in infos]  # a scoped IPv6 address (fe80::1%eth0) too
