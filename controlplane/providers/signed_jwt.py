"""The `signed-jwt` provider: an ES256 JWT minted by the control plane for the target's audience."""

from __future__ import annotations

import uuid

import jwt

from controlplane.clock import Clock, SystemClock
from controlplane.providers.base import JWT_TOKEN_TYPE, IssuedCredential, MintRequest
from controlplane.signing_keys import ALG, SigningKeys

__all__ = ["SignedJwtProvider", "subject_for"]


def subject_for(cluster: str, namespace: str, service_account: str) -> str:
    return f"sesame://{cluster}/ns/{namespace}/sa/{service_account}"


class SignedJwtProvider:
    """Targets verify these with `GET /v1/jwks` (or OIDC discovery at the issuer URL).

    Config: optional `ttl_seconds` (further capped by the policy and the key set's maximum).
    """

    def __init__(self, *, keys: SigningKeys, issuer_url: str, clock: Clock = SystemClock()) -> None:
        self._keys = keys
        self._issuer = issuer_url.rstrip("/")  # configuration (`Config.issuer_url`), never a request
        self._clock = clock

    async def issue(self, request: MintRequest) -> IssuedCredential:
        key = await self._keys.signer()
        ttl = min(request.max_ttl_seconds, self._keys.max_token_ttl_seconds)
        configured = request.config.get("ttl_seconds")
        if isinstance(configured, int) and not isinstance(configured, bool) and configured > 0:
            ttl = min(ttl, configured)
        now = int(self._clock.time())
        identity = request.identity
        claims = {
            "iss": self._issuer,
            "sub": subject_for(identity.cluster, identity.namespace, identity.service_account),
            "aud": request.audience,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": str(uuid.uuid4()),
        }
        token = jwt.encode(claims, key.private_key, algorithm=ALG, headers={"kid": key.kid})
        return IssuedCredential(access_token=token, expires_in=ttl, issued_token_type=JWT_TOKEN_TYPE)
