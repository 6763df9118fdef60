"""The `gcp-workload-identity` provider: a Google Cloud access token through Workload Identity
Federation, optionally impersonating a service account.

1. STS token exchange (RFC 8693) at `sts_url` (`https://sts.googleapis.com/v1/token`, form):
   `grant_type=urn:ietf:params:oauth:grant-type:token-exchange`, `audience` = the pool provider
   (`//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/providers/R`),
   `scope`, `requested_token_type=urn:ietf:params:oauth:token-type:access_token`,
   `subject_token_type=urn:ietf:params:oauth:token-type:jwt`, `subject_token` = a JWT Sesame signs
   for the workload (`aud` = `https:` + the provider name, the pool's default allowed audience).
   https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token
2. With `service_account`: `POST {iam_url}/v1/projects/-/serviceAccounts/{email}:generateAccessToken`
   with the federated token as Bearer and `{"scope": [...], "lifetime": "Ns"}`; the answer's
   `accessToken` and `expireTime`.
   https://cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts/generateAccessToken
"""

from __future__ import annotations

from urllib.parse import quote

from controlplane.providers.base import MintRequest, UpstreamMintFailed
from controlplane.providers.cached import (
    UPSTREAM_TIMEOUT_SECONDS,
    FederatingProvider,
    UpstreamToken,
    json_answer,
    parse_rfc3339,
)
from controlplane.providers.upstream import upstream_request

__all__ = ["DEFAULT_IAM_URL", "DEFAULT_STS_URL", "GcpWorkloadIdentityProvider"]

DEFAULT_STS_URL = "https://sts.googleapis.com/v1/token"
DEFAULT_IAM_URL = "https://iamcredentials.googleapis.com"
DEFAULT_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
_SUBJECT_TTL = 300


class GcpWorkloadIdentityProvider(FederatingProvider):
    """Config: `audience` (the pool provider), `token_audience` (default `https:` + audience),
    `service_account` (email; optional), `scopes`, `lifetime_seconds` (impersonation, ≤ 3600),
    `sts_url`, `iam_url`, `ca_pem`. No secret."""

    async def _fetch(self, request: MintRequest) -> UpstreamToken:
        config = request.config
        audience = config.get("audience")
        if not isinstance(audience, str) or not audience:
            raise UpstreamMintFailed("gcp-workload-identity needs audience (the pool provider)")
        scopes = list(config.get("scopes") or [DEFAULT_SCOPE])
        started = self._clock.time()
        subject = await self._workload_token(
            request, str(config.get("token_audience") or "https:" + audience), ttl=_SUBJECT_TTL
        )
        status, raw = await upstream_request(
            self._http, "POST", str(config.get("sts_url") or DEFAULT_STS_URL), what="Google STS",
            timeout_seconds=UPSTREAM_TIMEOUT_SECONDS, ca_pem=config.get("ca_pem"),
            data={"grant_type": TOKEN_EXCHANGE, "audience": audience, "scope": " ".join(scopes),
                  "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
                  "subject_token_type": "urn:ietf:params:oauth:token-type:jwt", "subject_token": subject},
            headers={"Accept": "application/json"},
        )
        answer = json_answer(status, raw, "Google STS")
        federated, lifetime = answer.get("access_token"), answer.get("expires_in")
        if not isinstance(federated, str) or not federated or not isinstance(lifetime, int) or lifetime <= 0:
            raise UpstreamMintFailed("Google STS answered no access_token/expires_in")
        email = config.get("service_account")
        if not email:
            return UpstreamToken(federated, started + lifetime)
        iam = str(config.get("iam_url") or DEFAULT_IAM_URL).rstrip("/")
        seconds = int(config.get("lifetime_seconds") or 3600)
        status, raw = await upstream_request(
            self._http, "POST",
            f"{iam}/v1/projects/-/serviceAccounts/{quote(str(email), safe='@')}:generateAccessToken",
            what="IAM Credentials API", timeout_seconds=UPSTREAM_TIMEOUT_SECONDS, ca_pem=config.get("ca_pem"),
            json={"scope": scopes, "lifetime": f"{seconds}s"},
            headers={"Authorization": f"Bearer {federated}", "Accept": "application/json"},
        )
        answer = json_answer(status, raw, "IAM Credentials API")
        token = answer.get("accessToken")
        if not isinstance(token, str) or not token:
            raise UpstreamMintFailed("the IAM Credentials API answered no accessToken")
        return UpstreamToken(token, parse_rfc3339(answer.get("expireTime"), "the IAM Credentials API"))
