"""Credential providers: how a credential for one target is produced."""

from __future__ import annotations

from controlplane.providers.aws_sts import AwsStsProvider
from controlplane.providers.azure_federated import AzureFederatedProvider
from controlplane.providers.base import (
    ACCESS_TOKEN_TYPE,
    DEFAULT_MAX_TTL_SECONDS,
    JWT_TOKEN_TYPE,
    CredentialProvider,
    IssuedCredential,
    MintRequest,
    ProviderAddressRefused,
    ProviderDenied,
    ProviderTimeout,
    ProviderUnavailable,
    UpstreamMintFailed,
)
from controlplane.providers.gcp_workload_identity import GcpWorkloadIdentityProvider
from controlplane.providers.github_app import GitHubAppProvider
from controlplane.providers.guard import GuardSettings, ProviderGuard
from controlplane.providers.oauth2_client_credentials import OAuth2ClientCredentialsProvider, OAuth2Settings
from controlplane.providers.signed_jwt import SignedJwtProvider, subject_for
from controlplane.providers.static import StaticProvider

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "DEFAULT_MAX_TTL_SECONDS",
    "DESTINATION_FIELDS",
    "JWT_TOKEN_TYPE",
    "PROVIDER_TYPES",
    "SECRET_FIELDS",
    "AwsStsProvider",
    "AzureFederatedProvider",
    "CredentialProvider",
    "GcpWorkloadIdentityProvider",
    "GitHubAppProvider",
    "GuardSettings",
    "IssuedCredential",
    "MintRequest",
    "OAuth2ClientCredentialsProvider",
    "OAuth2Settings",
    "ProviderAddressRefused",
    "ProviderDenied",
    "ProviderGuard",
    "ProviderTimeout",
    "ProviderUnavailable",
    "SignedJwtProvider",
    "StaticProvider",
    "UpstreamMintFailed",
    "subject_for",
]

PROVIDER_TYPES = (
    "static",
    "oauth2-client-credentials",
    "signed-jwt",
    "aws-sts",
    "gcp-workload-identity",
    "azure-federated",
    "github-app",
)

# The config fields of each provider type that are secret: stored sealed, never returned.
SECRET_FIELDS: dict[str, tuple[str, ...]] = {
    "static": ("value", "password"),
    "oauth2-client-credentials": ("client_secret",),
    "signed-jwt": (),
    "aws-sts": ("access_key_id", "secret_access_key"),
    "gcp-workload-identity": (),
    "azure-federated": (),
    "github-app": ("private_key",),
}

# The config fields that decide where a provider's secret is sent: changing one needs the secret
# given again in the same request, or clears it (api/credential_providers.py).
DESTINATION_FIELDS: dict[str, tuple[str, ...]] = {
    "static": (),
    "oauth2-client-credentials": ("token_url", "ca_pem"),
    "signed-jwt": (),
    "aws-sts": ("sts_endpoint", "ca_pem"),
    "gcp-workload-identity": ("sts_url", "iam_url", "ca_pem"),
    "azure-federated": ("authority_url", "tenant_id", "ca_pem"),
    "github-app": ("api_url", "installation_id", "ca_pem"),
}
