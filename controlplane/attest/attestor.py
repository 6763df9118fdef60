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
from controlplane.clock import Clock, SystemClock

__all__ = ["DEFAULT_VERIFIED_CACHE_SECONDS", "Attestor", "ClusterDirectory"]

# A sidecar presents the same SA token for up to an hour: re-verifying it on every exchange costs
# several JWT parses and a signature check, so a verified identity is reused briefly (never past exp).
DEFAULT_VERIFIED_CACHE_SECONDS = 30


class ClusterDirectory(Protocol):
    """Looks up a trusted cluster by the `iss` its tokens carry."""

    async def cluster_by_issuer(self, issuer: str) -> ClusterTrust | None: ...


class Attestor:
    """Size and alg checks, issuer lookup, then the cluster's verifier (JWKS or TokenReview)."""

    def __init__(
        self,
        *,
        clusters: ClusterDirectory,
        jwks: Verifier,
        tokenreview: Verifier | None = None,
        clock: Clock = SystemClock(),
        cache_seconds: float = DEFAULT_VERIFIED_CACHE_SECONDS,
    ) -> None:
        self._clusters = clusters
        self._jwks = jwks
        self._tokenreview = tokenreview
        self._cache_seconds = cache_seconds
        self._verified: TLRUCache[str, Identity] = TLRUCache(
            maxsize=10_000, ttu=self._until, timer=clock.time
        )

    def _until(self, _key: str, identity: Identity, now: float) -> float:
        return min(identity.expires_at, now + self._cache_seconds)

    def forget(self) -> None:
        """Drop every verified token (a cluster changed: its tokens must be checked again)."""
        self._verified.clear()

    async def attest(self, token: str) -> Identity:
        """The identity a token proves; a token verified in the last `cache_seconds` is not re-verified."""
        if len(token.encode()) > DEFAULT_MAX_TOKEN_BYTES:
            raise InvalidSubjectToken(
                "token_too_large", f"the subject token is over {DEFAULT_MAX_TOKEN_BYTES} bytes"
            )
        digest = token_digest(token)
        cached = self._verified.get(digest)
        if cached is not None:
            return cached
        identity = await self._attest(token)
        self._verified[digest] = identity
        return identity

    async def _attest(self, token: str) -> Identity:
        _, claims = read_unverified(token)
        issuer = claims.get("iss")
        cluster = await self._clusters.cluster_by_issuer(issuer) if isinstance(issuer, str) else None
        if cluster is None:
            raise InvalidSubjectToken("unknown_issuer", "the token's issuer is not a registered cluster")
        if cluster.verification == "tokenreview":
            if self._tokenreview is None:
                raise InvalidSubjectToken("token_review_failed", "TokenReview verification is not configured")
            return await self._tokenreview.verify(token, cluster)
        return await self._jwks.verify(token, cluster)
