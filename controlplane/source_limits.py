"""Pre-authentication limit per source address: a token bucket per client IP, checked (by
`middlewares.source_limit_middleware`) before any key, token or review is looked at, on every
route but the probes and metrics (429 + Retry-After).

The source is the TCP peer address (never X-Forwarded-For, which a client writes itself); IPv6
peers are bucketed by their /64, which one host usually holds whole. The limiter keeps at most
`max_sources` buckets (least recently seen dropped first), so a spray of addresses costs memory
that is bounded.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from controlplane.clock import Clock
from controlplane.errors import RateLimited, StartupError

__all__ = [
    "DEFAULT_DENIAL_INTERVAL_SECONDS",
    "DEFAULT_SOURCE_BURST",
    "DEFAULT_SOURCE_RATE_PER_SECOND",
    "EXEMPT_PATHS",
    "SOURCE_LIMITER",
    "SourceLimitSettings",
    "SourceLimiter",
    "SourceRateLimited",
    "source_of",
]

DEFAULT_SOURCE_RATE_PER_SECOND = 50.0
DEFAULT_SOURCE_BURST = 200
DEFAULT_MAX_SOURCES = 65_536
DEFAULT_DENIAL_INTERVAL_SECONDS = 60.0
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})  # kubelet probes and scrapes

_ENV = {
    "rate_per_second": "SESAME_SOURCE_RATE",
    "burst": "SESAME_SOURCE_BURST",
    "denial_interval_seconds": "SESAME_DENIAL_AUDIT_INTERVAL",
}


@dataclass(frozen=True, kw_only=True)
class SourceLimitSettings:
    """`rate_per_second` sustained and `burst` at once per source address; denials before
    authentication are aggregated in the audit log per `denial_interval_seconds`."""

    rate_per_second: float = DEFAULT_SOURCE_RATE_PER_SECOND
    burst: int = DEFAULT_SOURCE_BURST
    max_sources: int = DEFAULT_MAX_SOURCES
    denial_interval_seconds: float = DEFAULT_DENIAL_INTERVAL_SECONDS

    def __post_init__(self) -> None:
        if self.rate_per_second <= 0 or self.burst < 1 or self.max_sources < 1:
            raise StartupError(f"{_ENV['rate_per_second']} must be > 0 and {_ENV['burst']} >= 1")
        if self.denial_interval_seconds <= 0:
            raise StartupError(f"{_ENV['denial_interval_seconds']} must be > 0")

    @classmethod
    def build(cls, env: Mapping[str, str]) -> SourceLimitSettings:
        values: dict[str, float] = {}
        for name, var in _ENV.items():
            text = env.get(var)
            if text:
                try:
                    values[name] = int(text) if name == "burst" else float(text)
                except ValueError:
                    raise StartupError(f"{var} must be a number") from None
        return cls(**values)  # type: ignore[arg-type]


class SourceRateLimited(RateLimited):
    """Too many requests from this source address (before authentication)."""


class SourceLimiter:
    """Token buckets by source address."""

    def __init__(self, settings: SourceLimitSettings, clock: Clock) -> None:
        self._rate = settings.rate_per_second
        self._burst = float(settings.burst)
        self._max = settings.max_sources
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # source → (tokens, at)

    def check(self, source: str) -> None:
        """Take one token for `source`, or raise SourceRateLimited with the seconds until the next."""
        now = self._clock.time()
        tokens, at = self._buckets.pop(source, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        if tokens < 1.0:
            self._buckets[source] = (tokens, now)
            retry = max(1, math.ceil((1.0 - tokens) / self._rate))
            raise SourceRateLimited("too many requests from this address", retry_after=retry)
        self._buckets[source] = (tokens - 1.0, now)
        if len(self._buckets) > self._max:
            self._buckets.popitem(last=False)


SOURCE_LIMITER = web.AppKey("source_limiter", SourceLimiter)


def source_of(request: web.Request) -> str:
    """The caller's address as the limiter and the audit log key it (IPv6: its /64)."""
    remote = request.remote or "unknown"
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return remote
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return remote
