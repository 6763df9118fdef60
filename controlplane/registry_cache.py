"""The registry lookups of the token exchange, kept briefly in memory.

Every exchange needs the caller's cluster, workload, target, matching policies and provider (with
its decrypted secret): five reads that change rarely. They are cached for `ttl_seconds` and the
whole cache is dropped the moment any registry write commits in this process
(`SqlRegistry.listeners`), so a revoked workload or deleted policy takes effect at once here.
Writes made by another replica sharing the database are seen within `ttl_seconds`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from cachetools import TTLCache

from controlplane.clock import Clock
from controlplane.envelope import Envelope
from controlplane.policy import Rule
from controlplane.provider_secrets import open_secret
from controlplane.providers import DEFAULT_MAX_TTL_SECONDS
from controlplane.store.sql.exchange import SqlExchange

__all__ = ["DEFAULT_CACHE_MAX_ENTRIES", "CachedProvider", "RegistryCache", "rule_of"]

DEFAULT_CACHE_MAX_ENTRIES = 10_000

T = TypeVar("T")


def rule_of(record: dict[str, Any]) -> Rule:
    """A stored policy record as the policy evaluator's `Rule`."""
    return Rule(
        id=record["id"],
        provider_id=record["provider_id"],
        effect=record["effect"],
        max_ttl_seconds=int(record.get("max_ttl_seconds") or DEFAULT_MAX_TTL_SECONDS),
        workload_id=record.get("workload_id"),
        target_id=record.get("target_id"),
    )


class CachedProvider:
    """A credential provider's record and its opened secret fields (kept out of repr and logs)."""

    __slots__ = ("record", "secret")

    def __init__(self, record: dict[str, Any], secret: dict[str, Any]) -> None:
        self.record = record
        self.secret = secret

    def __repr__(self) -> str:
        return f"CachedProvider(id={self.record.get('id')!r})"


class RegistryCache:
    """Read-through cache over `SqlExchange`; values are shared, callers must not mutate them."""

    def __init__(
        self,
        store: SqlExchange,
        *,
        envelope: Envelope,
        clock: Clock,
        ttl_seconds: float,
        max_entries: int = DEFAULT_CACHE_MAX_ENTRIES,
    ) -> None:
        self._store = store
        self._envelope = envelope
        self._enabled = ttl_seconds > 0
        self._cache: TTLCache[Hashable, Any] = TTLCache(
            maxsize=max_entries, ttl=max(ttl_seconds, 0.001), timer=clock.time
        )
        self._generation = 0

    def invalidate(self, kind: str | None = None) -> None:
        """Drop everything (any registry write can change any answer: a policy names a provider...)."""
        self._generation += 1
        self._cache.clear()

    async def _get(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> T:
        if not self._enabled:
            return await load()
        try:
            return self._cache[key]
        except KeyError:
            pass
        generation = self._generation
        value = await load()
        if generation == self._generation:  # no write committed while we read: safe to keep
            self._cache[key] = value
        return value

    async def cluster_by_issuer(self, issuer: str) -> dict[str, Any] | None:
        return await self._get(("cluster", issuer), lambda: self._store.cluster_by_issuer(issuer))

    async def workload_for(
        self, *, cluster: str, namespace: str, service_account: str
    ) -> dict[str, Any] | None:
        return await self._get(
            ("workload", cluster, namespace, service_account),
            lambda: self._store.workload_for(
                cluster=cluster, namespace=namespace, service_account=service_account
            ),
        )

    async def target_by_audience(self, audience: str) -> dict[str, Any] | None:
        return await self._get(("target", audience), lambda: self._store.target_by_audience(audience))

    async def rules_for(self, *, workload_id: str, target_id: str) -> tuple[Rule, ...]:
        """The policies that can match (workload, target), as evaluator rules."""

        async def load() -> tuple[Rule, ...]:
            records = await self._store.policies_for(workload_id=workload_id, target_id=target_id)
            return tuple(rule_of(r) for r in records)

        return await self._get(("rules", workload_id, target_id), load)

    async def provider(self, provider_id: str) -> CachedProvider | None:
        """The provider and its decrypted secret (opened once per cache lifetime, not per exchange)."""

        async def load() -> CachedProvider | None:
            found = await self._store.provider(provider_id)
            if found is None:
                return None
            record, sealed = found
            return CachedProvider(record, open_secret(self._envelope, record["id"], sealed))

        return await self._get(("provider", provider_id), load)
