"""Credential providers: how a credential for one target is produced."""

from __future__ import annotations

from controlplane.providers.base import (
    ACCESS_TOKEN_TYPE,
    DEFAULT_MAX_TTL_SECONDS,
    JWT_TOKEN_TYPE,
    CredentialProvider,
    IssuedCredential,
    MintRequest,
    UpstreamMintFailed,
)
from controlplane.providers.oauth2_client_credentials import OAuth2ClientCredentialsProvider, OAuth2Settings
from controlplane.providers.signed_jwt import SignedJwtProvider, subject_for
from controlplane.providers.static import StaticProvider

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "DEFAULT_MAX_TTL_SECONDS",
    "JWT_TOKEN_TYPE",
    "PROVIDER_TYPES",
    "SECRET_FIELDS",
    "CredentialProvider",
    "IssuedCredential",
    "MintRequest",
    "OAuth2ClientCredentialsProvider",
    "OAuth2Settings",
    "SignedJwtProvider",
    "StaticProvider",
    "UpstreamMintFailed",
    "subject_for",
]

PROVIDER_TYPES = ("static", "oauth2-client-credentials", "signed-jwt")

# The config fields of each provider type that are secret: stored sealed, never returned.
SECRET_FIELDS: dict[str, tuple[str, ...]] = {
    "static": ("value", "password"),
    "oauth2-client-credentials": ("client_secret",),
    "signed-jwt": (),
}
