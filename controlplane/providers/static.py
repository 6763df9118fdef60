"""The `static` provider: hand out the stored secret, leased for the policy's max TTL."""

from __future__ import annotations

from controlplane.providers.base import IssuedCredential, MintRequest, UpstreamMintFailed

__all__ = ["StaticProvider"]


class StaticProvider:
    """An API key, bearer token, or basic `user:password` kept encrypted in the store.

    Secret fields: `value` (key or token), or `password` with config `username` (basic). The lease is the
    policy's `max_ttl_seconds`, so a rotated or revoked secret stops being served within a lease.
    """

    async def issue(self, request: MintRequest) -> IssuedCredential:
        secret = request.secret
        value = secret.get("value")
        username = request.config.get("username", secret.get("username"))
        if not value and username is not None and secret.get("password") is not None:
            value = f"{username}:{secret['password']}"
        if not isinstance(value, str) or not value:
            raise UpstreamMintFailed("the static provider has no stored secret")
        return IssuedCredential(access_token=value, expires_in=request.max_ttl_seconds)
