"""Credential cache per audience: refresh ahead, single flight, stale while the control plane is down."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cachetools import TLRUCache

from proxy.errors import ApprovalPending, CredentialUnavailable, Denied, InvalidCredential, ProxyError
from proxy.http_grammar import has_ctl
from proxy.metrics import Metrics

__all__ = ["DEFAULT_CACHE_SIZE", "DEFAULT_RETRY_BACKOFF", "Credential", "CredentialCache"]

DEFAULT_CACHE_SIZE = 1024
DEFAULT_RETRY_BACKOFF = 2.0
log = logging.getLogger("sesame.proxy.credentials")

Exchange = Callable[[str], Awaitable[tuple[str, float]]]
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Credential:
    token: str
    expires_at: float
    refresh_at: float


class CredentialCache:
    """`get(audience)` returns a credential that has not expired, or raises (fail closed).

    - fresh (before refresh_at): served from the cache;
    - past refresh_at (≈80 % of the lifetime, minus jitter): served, and one background refresh runs;
      if it fails the credential keeps serving until it expires (control plane down);
    - expired or absent: one exchange per audience however many requests wait for it.
    Denials (policy_denied, approval_pending, …) drop the cached credential.
    """

    def __init__(
        self,
        exchange: Exchange,
        metrics: Metrics,
        *,
        clock: Clock = time.monotonic,
        refresh_fraction: float = 0.8,
        jitter: float = 0.1,
        retry_backoff: float = DEFAULT_RETRY_BACKOFF,
        maxsize: int = DEFAULT_CACHE_SIZE,
        rng: random.Random | None = None,
    ) -> None:
        self._exchange = exchange
        self._metrics = metrics
        self._clock = clock
        self._fraction = refresh_fraction
        self._jitter = jitter
        self._backoff = retry_backoff
        self._rng = rng or random.Random()
        self._cache: TLRUCache[str, Credential] = TLRUCache(
            maxsize, ttu=lambda _k, cred, _now: cred.expires_at, timer=clock
        )
        # the same entries as _cache, read without TLRUCache's timer bookkeeping (peek checks expiry)
        self._fresh: dict[str, Credential] = {}
        self._inflight: dict[str, asyncio.Future[Credential]] = {}
        self._next_attempt: dict[str, float] = {}
        self._tasks: set[asyncio.Task] = set()

    async def get(self, audience: str) -> Credential:
        cred = self.peek(audience)
        if cred is not None:
            return cred
        self._metrics.cache_miss.inc()
        fut = self._inflight.get(audience) or self._start(audience, background=False)
        return await asyncio.shield(fut)

    def peek(self, audience: str) -> Credential | None:
        """The cached credential without awaiting (the fast path); None when a request must wait for one."""
        cred = self._fresh.get(audience)
        if cred is None:
            return None
        now = self._clock()
        if now < cred.refresh_at:
            self._metrics.cache_hit.inc()
            return cred
        if now >= cred.expires_at:
            return None
        self._metrics.cache_stale.inc()
        if audience not in self._inflight and now >= self._next_attempt.get(audience, 0.0):
            self._start(audience, background=True)
        return cred

    def drop(self, audience: str, token: str) -> None:
        """Forget the credential the upstream rejected (401), unless a newer one replaced it."""
        cred = self._cache.get(audience)
        if cred is not None and cred.token == token:
            del self._cache[audience]
            self._fresh.pop(audience, None)
            self._metrics.cache_dropped.inc()

    def _start(self, audience: str, *, background: bool) -> asyncio.Future[Credential]:
        fut: asyncio.Future[Credential] = asyncio.get_running_loop().create_future()
        self._inflight[audience] = fut
        task = asyncio.create_task(self._fetch(audience, fut, background), name=f"sesame-exchange-{audience}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return fut

    async def _fetch(self, audience: str, fut: asyncio.Future[Credential], background: bool) -> None:
        started = time.perf_counter()
        try:
            token, expires_in = await self._exchange(audience)
            if has_ctl(token):  # never cached, never written into a request
                raise InvalidCredential("the credential holds a control character; it was not sent")
        except ProxyError as exc:
            self._metrics.exchange_seconds.labels(exc.code).observe(time.perf_counter() - started)
            self._next_attempt[audience] = self._clock() + self._backoff
            if isinstance(exc, Denied | ApprovalPending):
                self._cache.pop(audience, None)
                self._fresh.pop(audience, None)
            if background:
                self._metrics.cache_refresh_failed.inc()
                log.warning("credential refresh failed", extra={"audience": audience, "error": exc.code})
            fut.set_exception(exc)
            fut.exception()  # background refresh failures are logged, not raised into nothing
        except Exception as exc:  # a bug must not leave waiters hanging
            fut.set_exception(CredentialUnavailable(f"token exchange failed: {type(exc).__name__}"))
            fut.exception()
            log.exception("token exchange crashed")
        else:
            self._metrics.exchange_seconds.labels("ok").observe(time.perf_counter() - started)
            now = self._clock()
            lifetime = max(float(expires_in), 0.0)
            ahead = lifetime * self._fraction * (1 - self._rng.uniform(0, self._jitter))
            cred = Credential(token=token, expires_at=now + lifetime, refresh_at=now + ahead)
            if lifetime > 0:
                self._cache[audience] = cred
                self._fresh[audience] = cred
            self._next_attempt.pop(audience, None)
            if background:
                self._metrics.cache_refresh.inc()
            fut.set_result(cred)
        finally:
            self._inflight.pop(audience, None)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
