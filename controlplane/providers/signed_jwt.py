"""The `signed-jwt` provider: an ES256 JWT minted by the control plane for the target's audience."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import jwt

from controlplane.attest.identity import Identity
from controlplane.clock import Clock, SystemClock
from controlplane.providers.base import JWT_TOKEN_TYPE, IssuedCredential, MintRequest
from controlplane.signing_keys import ALG, SigningKeys

__all__ = ["SignedJwtProvider", "sign_workload_jwt", "subject_for"]


def subject_for(cluster: str, namespace: str, service_account: str) -> str:
    return f"sesame://{cluster}/ns/{namespace}/sa/{service_account}"


async def sign_workload_jwt(
    keys: SigningKeys,
    *,
    issuer: str,
    identity: Identity,
    audience: str,
    ttl: int,
    now: int,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """A JWT from the control plane's issuer naming the workload (`sub`) for `audience`: what
    signed-jwt targets and the clouds' federation (AWS STS, GCP STS, Entra ID) verify with the JWKS."""
    key = await keys.signer()
    claims = {
        "iss": issuer,
        "sub": subject_for(identity.cluster, identity.namespace, identity.service_account),
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "jti": str(uuid.uuid4()),
        **(extra or {}),
    }
    return jwt.encode(claims, key.private_key, algorithm=ALG, headers={"kid": key.kid})


class SignedJwtProvider:
    """Targets verify these with `GET /v1/jwks` (or OIDC discovery at the issuer URL).

    Config: optional `ttl_seconds` (further capped by the policy and the key set's maximum).
    """

    def __init__(self, *, keys: SigningKeys, issuer_url: str, clock: Clock = SystemClock()) -> None:
        self._keys = keys
        self._issuer = issuer_url.rstrip("/")  # configuration (`Config.issuer_url`), never a request
        self._clock = clock

    async def issue(self, request: MintRequest) -> IssuedCredential:
        ttl = min(request.max_ttl_seconds, self._keys.max_token_ttl_seconds)
        configured = request.config.get("ttl_seconds")
        if isinstance(configured, int) and not isinstance(configured, bool) and configured > 0:
            ttl = min(ttl, configured)
        token = await sign_workload_jwt(
            self._keys,
            issuer=self._issuer,
            identity=request.identity,
            audience=request.audience,
            ttl=ttl,
            now=int(self._clock.time()),
        )
        return IssuedCredential(access_token=token, expires_in=ttl, issued_token_type=JWT_TOKEN_TYPE)
