"""Outbound HTTP from the control plane (JWKS, discovery, token endpoints) under one address policy.

Loopback, link-local, private, unique-local, unspecified and every other non-global address is
refused unless the operator's allow-list (`SESAME_OUTBOUND_ALLOW`, CIDRs) names it. The check runs
on the addresses the connection is actually made to: hostnames are resolved by a policy resolver
that hands aiohttp only permitted addresses (so a DNS answer cannot be swapped between check and
connect), literal addresses are checked before the request. Redirects are never followed.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from controlplane.errors import SesameError, StartupError

__all__ = ["AddressRefused", "Network", "OutboundClient", "OutboundPolicy", "literal_address"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRefused(SesameError):
    """A URL's host is (or resolves only to) an address the outbound policy refuses.

    403: the request is well formed; the operator's policy (not the schema) forbids the address.
    """

    code, status = "outbound_address_refused", 403


@dataclass(frozen=True)
class OutboundPolicy:
    """Which addresses the control plane may connect to: global ones, plus the allow-listed networks."""

    allow: tuple[Network, ...] = ()

    @classmethod
    def parse(
        cls, text: str | Iterable[str] | None, *, source: str = "SESAME_OUTBOUND_ALLOW"
    ) -> OutboundPolicy:
        """From comma-separated CIDRs (or a list of them); StartupError names a bad entry."""
        items = text.split(",") if isinstance(text, str) else list(text or ())
        networks = []
        for item in (i.strip() for i in items):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise StartupError(f"{source}: {item!r} is not an IP network (CIDR)") from None
        return cls(allow=tuple(networks))

    def permits(self, address: str | Address) -> bool:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback
        if any(ip in net for net in self.allow):
            return True
        return ip.is_global and not ip.is_multicast

    def check_literal(self, url: str, *, field: str | None = None) -> None:
        """Refuse `url` now when its host is a literal address the policy refuses (registration time)."""
        address = literal_address(url)
        if address is not None and not self.permits(address):
            raise AddressRefused(
                f"{field or 'the URL'} names {address}, an address outbound fetches may not reach "
                "(allow-list it with SESAME_OUTBOUND_ALLOW)",
                field=field,
            )


def literal_address(url: str) -> Address | None:
    """The IP address a URL's host is written as, or None for a hostname."""
    try:
        host = urlsplit(url).hostname or ""
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


class _PolicyResolver(AbstractResolver):
    """Resolves like aiohttp does, then keeps only the addresses the policy permits."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self._policy = policy
        self._resolver = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        permitted = [r for r in results if self._policy.permits(r["host"])]
        if not permitted:
            raise AddressRefused(f"{host} resolves only to addresses outbound fetches may not reach")
        return permitted

    async def close(self) -> None:
        await self._resolver.close()


class OutboundClient:
    """One aiohttp session whose connections pass the policy; made on first use, closed on `close`."""

    def __init__(self, policy: OutboundPolicy | None = None) -> None:
        self.policy = policy or OutboundPolicy()
        self._session: aiohttp.ClientSession | None = None
        self._resolver: _PolicyResolver | None = None

    async def request(
        self,
        method: str,
        url: str,
        *,
        timeout_seconds: float,
        max_bytes: int,
        tls: ssl.SSLContext | bool = True,
        **kwargs: Any,
    ) -> tuple[int, bytes]:
        """The status and at most `max_bytes + 1` bytes of the body (more than `max_bytes`: oversized).

        AddressRefused when the policy refuses the destination; aiohttp, timeout and TLS errors
        propagate: each caller translates them into its own error.
        """
        self.policy.check_literal(url)
        if self._session is None:
            self._resolver = _PolicyResolver(self.policy)
            connector = aiohttp.TCPConnector(resolver=self._resolver)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        async with self._session.request(
            method, url, timeout=timeout, ssl=tls, allow_redirects=False, **kwargs
        ) as resp:
            return resp.status, await resp.content.read(max_bytes + 1)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._resolver is not None:
            await self._resolver.close()
            self._resolver = None
