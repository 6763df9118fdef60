"""Credential providers: static leases, OAuth2 client credentials against a real token endpoint
(TLS, served on port 0, checking the client's credentials), and control-plane-signed JWTs."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import jwt
import pytest

from controlplane.attest import Identity
from controlplane.clock import FakeClock
from controlplane.envelope import Envelope
from controlplane.providers import (
    MintRequest,
    OAuth2ClientCredentialsProvider,
    SignedJwtProvider,
    StaticProvider,
    UpstreamMintFailed,
)
from controlplane.signing_keys import SigningKeys, StoredSigningKey
from controlplane.store import open_store
from controlplane.store.sql.exchange import SqlExchange
from devkit.controlplane_server import LOOPBACK
from tests.controlplane.exchange_support import CLIENT_ID, CLIENT_SECRET, serve_token_endpoint

IDENTITY = Identity(cluster="prod", namespace="shop", service_account="checkout", pod_name="p", pod_uid="u")


def request(
    config=None, secret=None, *, ttl=300, provider_id="cp_1", audience="https://api.example"
) -> MintRequest:
    return MintRequest(
        identity=IDENTITY,
        audience=audience,
        max_ttl_seconds=ttl,
        provider_id=provider_id,
        config=config or {},
        secret=secret or {},
    )


@pytest.mark.parametrize(
    ("secret", "expected"),
    [({"value": "sk_live_123"}, "sk_live_123"), ({"username": "ann", "password": "pw:1"}, "ann:pw:1")],
)
async def test_static_secret_is_leased_for_the_policy_ttl(secret, expected) -> None:
    issued = await StaticProvider().issue(request(secret=secret, ttl=120))
    assert (issued.access_token, issued.expires_in, issued.token_type) == (expected, 120, "Bearer")


async def test_static_provider_without_secret_fails_as_upstream_mint() -> None:
    with pytest.raises(UpstreamMintFailed) as info:
        await StaticProvider().issue(request(secret={}))
    assert (info.value.code, info.value.status) == ("upstream_mint_failed", 502)


@pytest.fixture
async def token_endpoint():
    async with serve_token_endpoint() as endpoint:
        yield endpoint


@pytest.fixture
async def oauth2():
    clock = FakeClock()
    provider = OAuth2ClientCredentialsProvider(clock=clock, policy=LOOPBACK)
    provider.clock = clock
    yield provider
    await provider.close()


def oauth_request(endpoint, method="client_secret_basic", ttl=300, secret=CLIENT_SECRET) -> MintRequest:
    config = {
        "token_url": endpoint.url,
        "client_id": CLIENT_ID,
        "auth_method": method,
        "ca_pem": endpoint.ca_pem,
        "scopes": ["read", "write"],
        "extra_params": {"resource": "https://api.example"},
    }
    return request(config, {"client_secret": secret}, ttl=ttl)


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_oauth2_authenticates_with_the_configured_method(oauth2, token_endpoint, method) -> None:
    issued = await oauth2.issue(oauth_request(token_endpoint, method))
    assert issued.access_token == "upstream-1" and issued.token_type == "Bearer"
    call = token_endpoint.calls[0]
    assert call["scope"] == "read write" and call["resource"] == "https://api.example"
    assert ("client_secret" in call) == (method == "client_secret_post")


async def test_oauth2_caches_until_sixty_seconds_before_expiry(oauth2, token_endpoint) -> None:
    first = await oauth2.issue(oauth_request(token_endpoint, ttl=7200))
    assert first.expires_in == 3600
    oauth2.clock.advance(3539)
    again = await oauth2.issue(oauth_request(token_endpoint, ttl=7200))
    assert (again.access_token, again.expires_in, len(token_endpoint.calls)) == ("upstream-1", 61, 1)
    oauth2.clock.advance(1)
    fresh = await oauth2.issue(oauth_request(token_endpoint, ttl=7200))
    assert (fresh.access_token, len(token_endpoint.calls)) == ("upstream-2", 2)


async def test_oauth2_lifetime_is_capped_by_the_policy(oauth2, token_endpoint) -> None:
    issued = await oauth2.issue(oauth_request(token_endpoint, ttl=300))
    assert issued.expires_in == 300


async def test_oauth2_rotated_secret_is_not_served_from_cache(oauth2, token_endpoint) -> None:
    await oauth2.issue(oauth_request(token_endpoint))
    with pytest.raises(UpstreamMintFailed) as info:
        await oauth2.issue(oauth_request(token_endpoint, secret="old-and-wrong"))
    assert "invalid_client" not in info.value.message and "old-and-wrong" not in info.value.message


async def test_oauth2_upstream_errors_are_upstream_mint_failed(oauth2, token_endpoint) -> None:
    token_endpoint.fail_with = 503
    with pytest.raises(UpstreamMintFailed, match="503"):
        await oauth2.issue(oauth_request(token_endpoint))


async def test_oauth2_untrusted_certificate_is_refused(oauth2, token_endpoint) -> None:
    req = oauth_request(token_endpoint)
    untrusted = MintRequest(**{**req.__dict__, "config": {**req.config, "ca_pem": None}})
    with pytest.raises(UpstreamMintFailed, match="unreachable"):
        await oauth2.issue(untrusted)
    assert token_endpoint.calls == []


@pytest.fixture
async def key_store(tmp_path) -> AsyncIterator[SqlExchange]:
    """The signing keys' real store: a SQLite file."""
    store = await open_store(tmp_path / "keys.db")
    try:
        yield SqlExchange(store.db)
    finally:
        await store.close()


async def stored_keys(key_store: SqlExchange) -> list[StoredSigningKey]:
    return await key_store.list_signing_keys(retired_after=float("-inf"))


async def test_signed_jwt_verifies_against_the_jwks_across_rotation(key_store) -> None:
    clock = FakeClock()
    keys = SigningKeys(
        store=key_store, envelope=Envelope.from_keys(os.urandom(32)), clock=clock, max_token_ttl_seconds=600
    )
    provider = SignedJwtProvider(keys=keys, issuer_url="https://cp.example/", clock=clock)
    old = await provider.issue(request(ttl=900))
    assert old.expires_in == 600 and old.issued_token_type == "urn:ietf:params:oauth:token-type:jwt"
    assert b"PRIVATE KEY" not in (await stored_keys(key_store))[0].sealed_private_key
    await keys.rotate()
    new = await provider.issue(request(ttl=60))
    jwks = jwt.PyJWKSet.from_dict(await keys.jwks())
    for issued in (old, new):
        kid = jwt.get_unverified_header(issued.access_token)["kid"]
        claims = jwt.decode(
            issued.access_token,
            jwks[kid].key,
            algorithms=["ES256"],
            audience="https://api.example",
            issuer="https://cp.example",
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
        )
        assert claims["sub"] == "sesame://prod/ns/shop/sa/checkout"
        assert set(claims) == {"iss", "sub", "aud", "iat", "nbf", "exp", "jti"}
    assert len(jwks.keys) == 2
    clock.advance(601)  # every token of the old key has expired: it leaves the JWKS
    assert [k["kid"] for k in (await keys.jwks())["keys"]] == [
        jwt.get_unverified_header(new.access_token)["kid"]
    ]


async def test_signing_keys_are_shared_through_the_store(key_store) -> None:
    envelope, clock = Envelope.from_keys(os.urandom(32)), FakeClock()
    first = SigningKeys(store=key_store, envelope=envelope, clock=clock)
    second = SigningKeys(store=key_store, envelope=envelope, clock=clock)
    assert (await first.signer()).kid == (await second.signer()).kid
    assert len(await stored_keys(key_store)) == 1
