"""Rate limits per key (admin API key, workload): `limit` requests in any `window`-second span.

`RateLimiter` counts in process memory: the limiter of a single replica (SQLite).
`SharedRateLimiter` counts in the database every replica shares (PostgreSQL), one atomic
statement per request, so the documented figure is what a client meets however many replicas
answer it. Both keep a sliding log of the admitted requests; the excess gets 429 `rate_limited`
with `Retry-After`, and a refused request is not counted.

When the shared counter fails (database error or slower than `timeout`), a limiter built with
`fail_open` (admin API keys, checked after authentication) admits the request, and any other fails
closed with 503 `rate_limit_unavailable`; either way a warning is logged and
`sesame_rate_limit_failures_total{limiter, outcome}` counts it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from typing import Protocol

from controlplane.clock import Clock
from controlplane.errors import RateLimited, SesameError, StoreError
from controlplane.metrics import Metrics

__all__ = [
    "DEFAULT_SHARED_TIMEOUT_SECONDS",
    "Limiter",
    "RateCounter",
    "RateLimitUnavailable",
    "RateLimiter",
    "SharedRateLimiter",
    "new_limiter",
]

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60.0
DEFAULT_SHARED_TIMEOUT_SECONDS = 2.0
_SWEEP_EVERY = 1000


class RateLimitUnavailable(SesameError):
    """The shared rate-limit counter failed and this limiter does not fail open."""

    code, status = "rate_limit_unavailable", 503


class Limiter(Protocol):
    name: str
    limit: int

    async def acquire(self, key: str) -> None:
        """Count one request for `key`, or raise RateLimited (not counted) with Retry-After."""
        ...

    async def forget(self, key: str) -> None: ...


class RateCounter(Protocol):
    """The shared store's counter (`store.rate_limits`; PostgreSQL only)."""

    async def hit(self, scope: str, key: str, *, now: float, window: float, limit: int) -> float | None:
        """Count one request unless `limit` were counted in the `window` before `now`, atomically:
        None when counted, else when the oldest counted request leaves the window."""
        ...

    async def forget(self, scope: str, key: str) -> None: ...


class RateLimiter:
    """The in-memory sliding log: allows `limit` requests per key in any `window`-second span."""

    def __init__(
        self, *, limit: int, clock: Clock, window: float = WINDOW_SECONDS, name: str = "local"
    ) -> None:
        self.name = name
        self.limit = limit
        self.window = window
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._calls = 0

    async def acquire(self, key: str) -> None:
        self.check(key)

    def check(self, key: str) -> None:
        """Count one request for `key`, or raise RateLimited (not counted) with Retry-After."""
        now = self._clock.time()
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            raise _limited(self.limit, hits[0] + self.window - now)
        hits.append(now)
        self._calls += 1
        if self._calls % _SWEEP_EVERY == 0:
            self._sweep(now)

    async def forget(self, key: str) -> None:
        self._hits.pop(key, None)

    def _sweep(self, now: float) -> None:
        for k in [k for k, h in self._hits.items() if not h or h[-1] <= now - self.window]:
            del self._hits[k]


class SharedRateLimiter:
    """The same sliding log, kept in the shared database under `name` (one row per key)."""

    def __init__(
        self,
        *,
        counter: RateCounter,
        name: str,
        limit: int,
        clock: Clock,
        fail_open: bool,
        metrics: Metrics | None = None,
        window: float = WINDOW_SECONDS,
        timeout: float = DEFAULT_SHARED_TIMEOUT_SECONDS,
    ) -> None:
        self.name = name
        self.limit = limit
        self.window = window
        self._counter = counter
        self._clock = clock
        self._fail_open = fail_open
        self._metrics = metrics
        self._timeout = timeout

    async def acquire(self, key: str) -> None:
        now = self._clock.time()
        try:
            async with asyncio.timeout(self._timeout):
                frees_at = await self._counter.hit(
                    self.name, key, now=now, window=self.window, limit=self.limit
                )
        except (StoreError, TimeoutError) as exc:
            outcome = "fail_open" if self._fail_open else "fail_closed"
            log.warning("%s rate limit unavailable (%s): %s", self.name, outcome, exc or "timed out")
            if self._metrics is not None:
                self._metrics.rate_limit_failed(self.name, outcome)
            if self._fail_open:
                return
            raise RateLimitUnavailable(f"the {self.name} rate limit cannot be checked; retry") from exc
        if frees_at is not None:
            raise _limited(self.limit, frees_at + self.window - now)

    async def forget(self, key: str) -> None:
        try:
            await self._counter.forget(self.name, key)
        except StoreError as exc:  # a stale counter row only costs a few bytes
            log.warning("could not drop the %s rate limit of a key: %s", self.name, exc)


def new_limiter(
    counter: RateCounter | None,
    *,
    name: str,
    limit: int,
    clock: Clock,
    fail_open: bool,
    metrics: Metrics | None = None,
) -> Limiter:
    """The shared limiter when the store has a shared counter (PostgreSQL), else the in-memory one."""
    if counter is None:
        return RateLimiter(limit=limit, clock=clock, name=name)
    return SharedRateLimiter(
        counter=counter, name=name, limit=limit, clock=clock, fail_open=fail_open, metrics=metrics
    )


def _limited(limit: int, seconds_left: float) -> RateLimited:
    return RateLimited(
        f"more than {limit} requests per minute for this key", retry_after=max(1, math.ceil(seconds_left))
    )
