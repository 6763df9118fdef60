"""Wiring of the token-exchange services onto the app (app keys, start-up and close).

Settings come from `app[CONFIG].exchange` (`controlplane.exchange_settings.ExchangeSettings`,
built once from flags and `SESAME_*` variables by `Config.build`).

app[EXCHANGE]      TokenExchange     the pipeline (+ `.store`: SqlExchange)
app[SIGNING_KEYS]  SigningKeys       ES256 key set behind /v1/jwks and signed-jwt providers
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from controlplane.appkeys import AUDIT, CLOCK, CONFIG, ENVELOPE, METRICS, STORE
from controlplane.attest import (
    Attestor,
    ClusterTrust,
    JwksVerifier,
    KubeApi,
    KubePodLookup,
    PodBinder,
    TokenReviewVerifier,
)
from controlplane.denials import DENIALS
from controlplane.providers import (
    AwsStsProvider,
    AzureFederatedProvider,
    GcpWorkloadIdentityProvider,
    GitHubAppProvider,
    OAuth2ClientCredentialsProvider,
    ProviderGuard,
    SignedJwtProvider,
    StaticProvider,
)
from controlplane.ratelimit import new_limiter
from controlplane.registry_cache import RegistryCache
from controlplane.signing_keys import SigningKeys
from controlplane.store.sql.exchange import SqlExchange
from controlplane.token_exchange import TokenExchange

__all__ = [
    "EXCHANGE",
    "SIGNING_KEYS",
    "setup",
]

EXCHANGE = web.AppKey("exchange", TokenExchange)
SIGNING_KEYS = web.AppKey("signing_keys", SigningKeys)


class _Clusters:
    """The store's clusters as an attestation `ClusterDirectory`."""

    def __init__(self, registry: RegistryCache) -> None:
        self._registry = registry

    async def cluster_by_issuer(self, issuer: str) -> ClusterTrust | None:
        record = await self._registry.cluster_by_issuer(issuer)
        return None if record is None else ClusterTrust.from_record(record)


def setup(app: web.Application) -> None:
    """Called by create_app; services are built at start-up, after the store has opened."""
    app.cleanup_ctx.append(_lifecycle)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    config, clock = app[CONFIG], app[CLOCK]
    settings = config.exchange
    store = SqlExchange(app[STORE].db)
    keys = SigningKeys(
        store=store,
        envelope=app[ENVELOPE],
        clock=clock,
        max_token_ttl_seconds=settings.max_signed_jwt_ttl_seconds,
        publication_seconds=settings.key_publication_seconds,
    )
    jwks = JwksVerifier(settings=settings.jwks, clock=clock, policy=config.outbound)
    # One kubernetes client (kubeconfig or in-cluster) for TokenReview and pod binding's pod reads.
    kube = KubeApi(kubeconfig=settings.tokenreview.kubeconfig, context=settings.tokenreview.context)
    tokenreview = TokenReviewVerifier(settings=settings.tokenreview, clock=clock, kube=kube)
    pods = PodBinder(
        lookup=KubePodLookup(kube=kube, timeout_seconds=settings.tokenreview.timeout_seconds), clock=clock
    )
    oauth2 = OAuth2ClientCredentialsProvider(clock=clock, policy=config.outbound)
    federation = {"keys": keys, "issuer_url": config.issuer_url, "clock": clock, "policy": config.outbound}
    fetching = {
        "aws-sts": AwsStsProvider(**federation),
        "gcp-workload-identity": GcpWorkloadIdentityProvider(**federation),
        "azure-federated": AzureFederatedProvider(**federation),
        "github-app": GitHubAppProvider(clock=clock, policy=config.outbound),
    }
    registry = RegistryCache(
        store, envelope=app[ENVELOPE], clock=clock, ttl_seconds=settings.registry_cache_seconds
    )
    attestor = Attestor(
        clusters=_Clusters(registry),
        jwks=jwks,
        tokenreview=tokenreview,
        pods=pods,
        clock=clock,
        cache_seconds=settings.attestation_cache_seconds,
    )

    def registry_changed(kind: str) -> None:
        registry.invalidate(kind)
        if kind == "clusters":  # a removed or re-keyed cluster must stop vouching at once
            attestor.forget()

    app[STORE].registry.listeners.append(registry_changed)
    app[SIGNING_KEYS] = keys
    app[EXCHANGE] = TokenExchange(
        store=store,
        registry=registry,
        attestor=attestor,
        providers={
            "static": StaticProvider(),
            "oauth2-client-credentials": oauth2,
            "signed-jwt": SignedJwtProvider(keys=keys, issuer_url=config.issuer_url, clock=clock),
            **fetching,
        },
        audit=app[AUDIT],
        denials=app[DENIALS],
        metrics=app[METRICS],
        clock=clock,
        # Checked after attestation, for workloads: a failed shared counter fails closed.
        limiter=new_limiter(
            app[STORE].rate_limits,
            name="exchange",
            limit=settings.rate_limit_per_minute,
            clock=clock,
            fail_open=False,
            metrics=app[METRICS],
        ),
        approval_window_seconds=settings.approval_window_seconds,
        guard=ProviderGuard(settings.providers, clock),
    )
    try:
        yield
    finally:
        app[STORE].registry.listeners.remove(registry_changed)
        await jwks.close()
        await tokenreview.close()
        await kube.close()
        await oauth2.close()
        for provider in fetching.values():
            await provider.close()
