"""Verify projected tokens with a TokenReview, for clusters that want early revocation."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from cachetools import TLRUCache

from controlplane.attest.claims import read_unverified
from controlplane.attest.identity import Clock, ClusterTrust, Identity, InvalidSubjectToken, token_digest
from controlplane.attest.kube import KubeApi
from controlplane.clock import SystemClock

__all__ = [
    "DEFAULT_TOKENREVIEW_CACHE_SECONDS",
    "DEFAULT_TOKENREVIEW_TIMEOUT_SECONDS",
    "TokenReviewSettings",
    "TokenReviewVerifier",
]

DEFAULT_TOKENREVIEW_CACHE_SECONDS = 60
DEFAULT_TOKENREVIEW_TIMEOUT_SECONDS = 5.0
_SA_PREFIX = "system:serviceaccount:"
_POD_NAME = "authentication.kubernetes.io/pod-name"
_POD_UID = "authentication.kubernetes.io/pod-uid"


@dataclass(frozen=True, kw_only=True)
class TokenReviewSettings:
    """Where the apiserver is (a kubeconfig, or in-cluster when None) and how long results are kept."""

    kubeconfig: str | None = None
    context: str | None = None
    cache_seconds: float = DEFAULT_TOKENREVIEW_CACHE_SECONDS
    timeout_seconds: float = DEFAULT_TOKENREVIEW_TIMEOUT_SECONDS


class TokenReviewVerifier:
    """A `Verifier` for clusters with `verification: tokenreview` (needs system:auth-delegator)."""

    def __init__(
        self,
        *,
        settings: TokenReviewSettings = TokenReviewSettings(),
        clock: Clock = SystemClock(),
        kube: KubeApi | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        # A `kube` passed in is shared (pod binding uses the same client) and closed by its owner.
        self._owns_kube = kube is None
        self._kube = kube or KubeApi(kubeconfig=settings.kubeconfig, context=settings.context)
        # Each verified token is kept until min(its exp, now + cache_seconds).
        self._cache: TLRUCache[str, Identity] = TLRUCache(maxsize=10_000, ttu=self._expiry, timer=clock.time)
        self.reviews = 0

    def _expiry(self, _key: str, identity: Identity, now: float) -> float:
        return min(identity.expires_at, now + self._settings.cache_seconds)

    async def close(self) -> None:
        if self._owns_kube:
            await self._kube.close()

    async def verify(self, token: str, cluster: ClusterTrust) -> Identity:
        _, claims = read_unverified(token)
        if claims.get("iss") != cluster.issuer:
            raise InvalidSubjectToken("wrong_issuer", "the token's issuer is not the cluster's issuer")
        exp = claims.get("exp")
        if not isinstance(exp, int | float):
            raise InvalidSubjectToken("missing_claims", "the token has no expiry")
        digest = token_digest(token)
        cached = self._cache.get(digest)
        if cached is not None and cached.cluster == cluster.name:
            return cached
        # The kubernetes client is synchronous: keep it off the event loop.
        status = await asyncio.to_thread(self._review, token, cluster.audience)
        identity = self._identity(status, cluster, float(exp))
        self._cache[digest] = identity
        return identity

    def _review(self, token: str, audience: str) -> Any:
        from kubernetes import client

        self.reviews += 1
        body = client.V1TokenReview(
            api_version="authentication.k8s.io/v1",
            kind="TokenReview",
            spec=client.V1TokenReviewSpec(token=token, audiences=[audience]),
        )
        try:
            api = client.AuthenticationV1Api(self._kube.client())
            review = api.create_token_review(body, _request_timeout=self._settings.timeout_seconds)
        except Exception:
            # `from None`: the client's exception text may carry the request, and with it the token.
            raise InvalidSubjectToken("token_review_failed", "the cluster's TokenReview API failed") from None
        return review.status

    def _identity(self, status: Any, cluster: ClusterTrust, exp: float) -> Identity:
        if status is None or not status.authenticated:
            raise InvalidSubjectToken("token_review_rejected", "the cluster did not authenticate the token")
        if cluster.audience not in (status.audiences or []):
            raise InvalidSubjectToken(
                "audience_mismatch", f"the token's audience does not include {cluster.audience!r}"
            )
        username = (status.user.username if status.user else "") or ""
        parts = username.removeprefix(_SA_PREFIX).split(":")
        if not username.startswith(_SA_PREFIX) or len(parts) != 2 or not all(parts):
            raise InvalidSubjectToken("missing_claims", "the token is not a service-account token")
        extra = (status.user.extra or {}) if status.user else {}
        return Identity(
            cluster=cluster.name,
            cluster_id=cluster.id,
            namespace=parts[0],
            service_account=parts[1],
            pod_name=next(iter(extra.get(_POD_NAME) or []), None),
            pod_uid=next(iter(extra.get(_POD_UID) or []), None),
            expires_at=exp,
        )
