"""The `azure-federated` provider: a Microsoft Entra ID access token for an app registration (or
user-assigned managed identity) that trusts Sesame's issuer through a federated credential.

Client credentials with a client assertion, no client secret: `POST
{authority_url}/{tenant_id}/oauth2/v2.0/token` (form) with `client_id`, `scope`,
`grant_type=client_credentials`,
`client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer` and
`client_assertion` = a JWT Sesame signs for the workload (`aud` = `api://AzureADTokenExchange`).
https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow#third-case-access-token-request-with-a-federated-credential
Errors are OAuth2 JSON (`error`: `invalid_client` with AADSTS700211 when no federated credential
matches the issuer/subject/audience, `invalid_grant`, `invalid_scope`, …).
"""

from __future__ import annotations

from urllib.parse import quote

from controlplane.providers.base import MintRequest, UpstreamMintFailed
from controlplane.providers.cached import (
    UPSTREAM_TIMEOUT_SECONDS,
    FederatingProvider,
    UpstreamToken,
    json_answer,
)
from controlplane.providers.upstream import upstream_request

__all__ = ["DEFAULT_AUTHORITY", "AzureFederatedProvider"]

DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
DEFAULT_ASSERTION_AUDIENCE = "api://AzureADTokenExchange"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_ASSERTION_TTL = 300


class AzureFederatedProvider(FederatingProvider):
    """Config: `tenant_id`, `client_id`, `scope` (e.g. `https://storage.azure.com/.default`),
    `authority_url`, `audience` (of the assertion), `ca_pem`. No secret."""

    async def _fetch(self, request: MintRequest) -> UpstreamToken:
        config = request.config
        tenant, client_id, scope = config.get("tenant_id"), config.get("client_id"), config.get("scope")
        if not (isinstance(tenant, str) and isinstance(client_id, str) and isinstance(scope, str)):
            raise UpstreamMintFailed("azure-federated needs tenant_id, client_id and scope")
        started = self._clock.time()
        assertion = await self._workload_token(
            request, str(config.get("audience") or DEFAULT_ASSERTION_AUDIENCE), ttl=_ASSERTION_TTL
        )
        authority = str(config.get("authority_url") or DEFAULT_AUTHORITY).rstrip("/")
        status, raw = await upstream_request(
            self._http,
            "POST",
            f"{authority}/{quote(tenant, safe='')}/oauth2/v2.0/token",
            what="Entra ID token endpoint",
            timeout_seconds=UPSTREAM_TIMEOUT_SECONDS,
            ca_pem=config.get("ca_pem"),
            data={"client_id": client_id, "scope": scope, "grant_type": "client_credentials",
                  "client_assertion_type": JWT_BEARER, "client_assertion": assertion},
            headers={"Accept": "application/json"},
        )
        answer = json_answer(status, raw, "Entra ID token endpoint")
        token, lifetime = answer.get("access_token"), answer.get("expires_in")
        if isinstance(lifetime, str) and lifetime.isdigit():
            lifetime = int(lifetime)
        if not isinstance(token, str) or not token or not isinstance(lifetime, int) or lifetime <= 0:
            raise UpstreamMintFailed("the Entra ID token endpoint answered no access_token/expires_in")
        return UpstreamToken(token, started + lifetime)
