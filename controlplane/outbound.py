"""Outbound HTTP from the control plane (JWKS, token endpoints): one session, bounded reads, no redirects."""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp

__all__ = ["OutboundClient"]


class OutboundClient:
    """Uses the caller's aiohttp session, or makes one on first use and closes it on `close`."""

    def __init__(self, session: aiohttp.ClientSession | None = None) -> None:
        self._session = session
        self._owns_session = session is None

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

        aiohttp, timeout and TLS errors propagate: each caller translates them into its own error.
        """
        if self._session is None:
            self._session = aiohttp.ClientSession()
        timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        async with self._session.request(
            method, url, timeout=timeout, ssl=tls, allow_redirects=False, **kwargs
        ) as resp:
            return resp.status, await resp.content.read(max_bytes + 1)

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None
