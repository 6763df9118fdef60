"""Per-key sliding-window rate limit (default 120 requests per minute)."""

from __future__ import annotations

import math
from collections import deque

from controlplane.clock import Clock
from controlplane.errors import RateLimited

__all__ = ["RateLimiter"]

WINDOW_SECONDS = 60.0
_SWEEP_EVERY = 1000


class RateLimiter:
    """Allows `limit` requests per key in any `window`-second span; the excess gets 429."""

    def __init__(self, *, limit: int, clock: Clock, window: float = WINDOW_SECONDS) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._calls = 0

    def check(self, key: str) -> None:
        """Count one request for `key`, or raise RateLimited (not counted) with Retry-After."""
        now = self._clock.time()
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            retry = max(1, math.ceil(hits[0] + self.window - now))
            raise RateLimited(f"more than {self.limit} requests per minute for this key", retry_after=retry)
        hits.append(now)
        self._calls += 1
        if self._calls % _SWEEP_EVERY == 0:
            self._sweep(now)

    def forget(self, key: str) -> None:
        self._hits.pop(key, None)

    def _sweep(self, now: float) -> None:
        for k in [k for k, h in self._hits.items() if not h or h[-1] <= now - self.window]:
            del self._hits[k]
