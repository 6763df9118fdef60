"""Route a subject token to its cluster's verifier: the entry point of attestation."""

from __future__ import annotations

from typing import Protocol

from controlplane.attest.claims import read_unverified
from controlplane.attest.identity import ClusterTrust, Identity, InvalidSubjectToken, Verifier

__all__ = ["Attestor", "ClusterDirectory"]


class ClusterDirectory(Protocol):
    """Looks up a trusted cluster by the `iss` its tokens carry."""

    async def cluster_by_issuer(self, issuer: str) -> ClusterTrust | None: ...


class Attestor:
    """Size and alg checks, issuer lookup, then the cluster's verifier (JWKS or TokenReview)."""

    def __init__(
        self, *, clusters: ClusterDirectory, jwks: Verifier, tokenreview: Verifier | None = None
    ) -> None:
        self._clusters = clusters
        self._jwks = jwks
        self._tokenreview = tokenreview

    async def attest(self, token: str) -> Identity:
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
