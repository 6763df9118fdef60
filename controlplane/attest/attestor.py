"""Route a subject token to its cluster's verifier: the entry point of attestation."""

from __future__ import annotations

from typing import Protocol

from cachetools import TLRUCache

from controlplane.attest.claims import read_unverified
from controlplane.attest.identity import (
    DEFAULT_MAX_TOKEN_BYTES,
    ClusterTrust,
    Identity,
    InvalidSubjectToken,
    Verifier,
    token_digest,
)
from controlplane.attest.pod_binding import PodBinder
from controlplane.clock import Clock, SystemClock

__all__ = ["DEFAULT_VERIFIED_CACHE_SECONDS", "Attestor", "ClusterDirectory"]

# A sidecar presents the same SA token for up to an hour: re-verifying it on every exchange costs
# several JWT parses and a signature check, so a verified identity is reused briefly (never past exp).
DEFAULT_VERIFIED_CACHE_SECONDS = 30


class ClusterDirectory(Protocol):
    """Looks up a trusted cluster by the `iss` its tokens carry."""

    async def cluster_by_issuer(self, issuer: str) -> ClusterTrust | None: ...


class Attestor:
    """Size and alg checks, issuer lookup, the cluster's verifier (JWKS or TokenReview), pod binding."""

    def __init__(
        self,
        *,
        clusters: ClusterDirectory,
        jwks: Verifier,
        tokenreview: Verifier | None = None,
        pods: PodBinder | None = None,
        clock: Clock = SystemClock(),
        cache_seconds: float = DEFAULT_VERIFIED_CACHE_SECONDS,
    ) -> None:
        self._clusters = clusters
        self._jwks = jwks
        self._tokenreview = tokenreview
        self._pods = pods
        self._cache_seconds = cache_seconds
        # token digest → (identity, its cluster's trust settings at verification time)
        self._verified: TLRUCache[str, tuple[Identity, ClusterTrust]] = TLRUCache(
            maxsize=10_000, ttu=self._until, timer=clock.time
        )

    def _until(self, _key: str, entry: tuple[Identity, ClusterTrust], now: float) -> float:
        return min(entry[0].expires_at, now + self._cache_seconds)

    def forget(self) -> None:
        """Drop every verified token (a cluster changed: its tokens must be checked again)."""
        self._verified.clear()
        if self._pods is not None:
            self._pods.forget()

    async def attest(self, token: str) -> Identity:
        """The identity a token proves; a token verified in the last `cache_seconds` is not re-verified."""
        if len(token.encode()) > DEFAULT_MAX_TOKEN_BYTES:
            raise InvalidSubjectToken(
                "token_too_large", f"the subject token is over {DEFAULT_MAX_TOKEN_BYTES} bytes"
            )
        digest = token_digest(token)
        entry = self._verified.get(digest)
        if entry is None:
            entry = await self._attest(token)
            self._verified[digest] = entry
        identity, cluster = entry
        if cluster.pod_binding:
            # On every call, cached token or not: the pod cache (≤ 30 s, by uid) bounds staleness.
            if self._pods is None:
                raise InvalidSubjectToken("pod_lookup_failed", "pod binding is not configured")
            await self._pods.check(identity)
        return identity

    async def _attest(self, token: str) -> tuple[Identity, ClusterTrust]:
        _, claims = read_unverified(token)
        issuer = claims.get("iss")
        cluster = await self._clusters.cluster_by_issuer(issuer) if isinstance(issuer, str) else None
        if cluster is None:
            raise InvalidSubjectToken("unknown_issuer", "the token's issuer is not a registered cluster")
        if cluster.verification == "tokenreview":
            if self._tokenreview is None:
                raise InvalidSubjectToken("token_review_failed", "TokenReview verification is not configured")
            return await self._tokenreview.verify(token, cluster), cluster
        return await self._jwks.verify(token, cluster), cluster
