"""Token-exchange settings: a frozen value built once from flags and `SESAME_*` variables.

`Config.build` calls `ExchangeSettings.build(flags, env)`; the result travels as `Config.exchange`
into the exchange services. Nothing else reads these variables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane.attest import JwksSettings, TokenReviewSettings
from controlplane.attest.attestor import DEFAULT_VERIFIED_CACHE_SECONDS
from controlplane.attest.identity import DEFAULT_CLUSTER_AUDIENCE
from controlplane.errors import StartupError
from controlplane.policy import DEFAULT_APPROVAL_WINDOW_SECONDS
from controlplane.providers.guard import GuardSettings
from controlplane.signing_keys import DEFAULT_KEY_PUBLICATION_SECONDS, DEFAULT_MAX_SIGNED_JWT_TTL_SECONDS

__all__ = [
    "DEFAULT_EXCHANGE_RATE_LIMIT_PER_MINUTE",
    "DEFAULT_REGISTRY_CACHE_SECONDS",
    "DEFAULT_ROUTES_REFRESH_SECONDS",
    "ENV_FLAGS",
    "ExchangeSettings",
]

DEFAULT_EXCHANGE_RATE_LIMIT_PER_MINUTE = 600
DEFAULT_ROUTES_REFRESH_SECONDS = 30
DEFAULT_REGISTRY_CACHE_SECONDS = 5.0

# flag name (argparse dest) → environment variable, for `sesame-controlplane serve` and the docs.
ENV_FLAGS = {
    "issuer_url": "SESAME_ISSUER_URL",
    "kubeconfig": "SESAME_KUBECONFIG",
    "kube_context": "SESAME_KUBE_CONTEXT",
    "exchange_rate_limit": "SESAME_EXCHANGE_RATE_LIMIT",
    "approval_window": "SESAME_APPROVAL_WINDOW",
    "routes_refresh": "SESAME_ROUTES_REFRESH",
    "attestation_cache": "SESAME_ATTESTATION_CACHE",
    "registry_cache": "SESAME_REGISTRY_CACHE",
    "key_publication_delay": "SESAME_KEY_PUBLICATION_DELAY",
}


@dataclass(frozen=True, kw_only=True)
class ExchangeSettings:
    """What the token exchange, the proxy-facing routes and the signed-JWT provider need.

    `issuer_url` None means "derive it from the listen address and TLS" (`Config.issuer`); it is
    never taken from a request. Set it behind a Service or load balancer.
    `tokenreview.kubeconfig` None means in-cluster configuration for TokenReview.
    """

    issuer_url: str | None = None
    audience: str = DEFAULT_CLUSTER_AUDIENCE
    rate_limit_per_minute: int = DEFAULT_EXCHANGE_RATE_LIMIT_PER_MINUTE
    approval_window_seconds: int = DEFAULT_APPROVAL_WINDOW_SECONDS
    routes_refresh_seconds: int = DEFAULT_ROUTES_REFRESH_SECONDS
    max_signed_jwt_ttl_seconds: int = DEFAULT_MAX_SIGNED_JWT_TTL_SECONDS
    key_publication_seconds: float = DEFAULT_KEY_PUBLICATION_SECONDS
    attestation_cache_seconds: float = DEFAULT_VERIFIED_CACHE_SECONDS
    registry_cache_seconds: float = DEFAULT_REGISTRY_CACHE_SECONDS
    providers: GuardSettings = field(default_factory=GuardSettings)  # timeout and circuit breaker
    jwks: JwksSettings = field(default_factory=JwksSettings)
    tokenreview: TokenReviewSettings = field(default_factory=TokenReviewSettings)

    def __post_init__(self) -> None:
        if self.issuer_url is not None and not self.issuer_url.startswith(("https://", "http://")):
            raise StartupError(f"issuer URL must be an http(s) URL, got {self.issuer_url!r}")
        for name in ("rate_limit_per_minute", "approval_window_seconds", "routes_refresh_seconds"):
            if getattr(self, name) < 1:
                raise StartupError(f"{name.replace('_', ' ')} must be at least 1")
        for name in ("attestation_cache_seconds", "registry_cache_seconds", "key_publication_seconds"):
            if getattr(self, name) < 0:
                raise StartupError(f"{name.replace('_', ' ')} must not be negative")

    @classmethod
    def build(cls, flags: Mapping[str, Any], env: Mapping[str, str], *, audience: str) -> ExchangeSettings:
        """Flags (None = not given) over `SESAME_*` variables (see `ENV_FLAGS`) over defaults."""

        def pick(flag: str) -> Any:
            value = flags.get(flag)
            return value if value is not None else (env.get(ENV_FLAGS[flag]) or None)

        issuer = pick("issuer_url")
        return cls(
            issuer_url=issuer.rstrip("/") if issuer else None,
            audience=audience,
            rate_limit_per_minute=_number(
                int,
                pick("exchange_rate_limit"),
                DEFAULT_EXCHANGE_RATE_LIMIT_PER_MINUTE,
                "exchange_rate_limit",
            ),
            approval_window_seconds=_number(
                int, pick("approval_window"), DEFAULT_APPROVAL_WINDOW_SECONDS, "approval_window"
            ),
            routes_refresh_seconds=_number(
                int, pick("routes_refresh"), DEFAULT_ROUTES_REFRESH_SECONDS, "routes_refresh"
            ),
            attestation_cache_seconds=_number(
                float, pick("attestation_cache"), DEFAULT_VERIFIED_CACHE_SECONDS, "attestation_cache"
            ),
            registry_cache_seconds=_number(
                float, pick("registry_cache"), DEFAULT_REGISTRY_CACHE_SECONDS, "registry_cache"
            ),
            key_publication_seconds=_number(
                float, pick("key_publication_delay"), DEFAULT_KEY_PUBLICATION_SECONDS, "key_publication_delay"
            ),
            providers=GuardSettings.build(env),
            tokenreview=TokenReviewSettings(kubeconfig=pick("kubeconfig"), context=pick("kube_context")),
        )


def _number(kind: type[int] | type[float], value: Any, default: int | float, flag: str) -> Any:
    if value is None:
        return default
    try:
        return kind(value)
    except (TypeError, ValueError):
        name = "int" if kind is int else "number"
        raise StartupError(f"{ENV_FLAGS[flag]} (--{flag.replace('_', '-')}) must be a {name}") from None
