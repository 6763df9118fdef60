"""JWKS attestation against a real cluster issuer served on port 0 (kube-apiserver's wire format)."""

from __future__ import annotations

import base64
import json

import jwt
import pytest

from controlplane.attest import Attestor, ClusterTrust, InvalidSubjectToken, JwksSettings, JwksVerifier
from controlplane.clock import FakeClock
from devkit.controlplane_server import LOOPBACK
from devkit.issuer import ClusterIssuer
from tests.controlplane.conftest import Clusters, reason_of, refusal


@pytest.fixture
def cluster(issuer: ClusterIssuer) -> ClusterTrust:
    return ClusterTrust(name="prod", issuer=issuer.issuer, id="cl_1")


@pytest.fixture
async def verifier(clock: FakeClock):
    verifier = JwksVerifier(policy=LOOPBACK, clock=clock, settings=JwksSettings(refetch_interval_seconds=10))
    yield verifier
    await verifier.close()


@pytest.fixture
def attestor(verifier: JwksVerifier, cluster: ClusterTrust) -> Attestor:
    return Attestor(clusters=Clusters(cluster), jwks=verifier)


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
async def test_projected_token_yields_the_workload_identity(attestor, issuer, alg) -> None:
    token = issuer.mint(namespace="shop", service_account="checkout", alg=alg, pod_name="p1", pod_uid="u1")
    identity = await attestor.attest(token)
    assert (identity.cluster, identity.namespace, identity.service_account) == ("prod", "shop", "checkout")
    assert (identity.pod_name, identity.pod_uid, identity.cluster_id) == ("p1", "u1", "cl_1")


async def test_keys_are_cached_between_verifications(attestor, issuer, verifier) -> None:
    for _ in range(3):
        await attestor.attest(issuer.mint(namespace="a", service_account="b"))
    assert verifier.fetches == 1


async def test_unknown_kid_refetches_once_then_is_rate_limited(attestor, issuer, verifier, clock) -> None:
    await attestor.attest(issuer.mint(namespace="a", service_account="b"))
    new_key = issuer.rotate("ES256")
    clock.advance(11)
    await attestor.attest(issuer.mint(namespace="a", service_account="b", key=new_key))
    assert verifier.fetches == 2
    stranger = ClusterIssuer(clock=clock.time, algs=("RS256",)).keys[0]
    token = issuer.mint(namespace="a", service_account="b", key=stranger)
    assert await reason_of(attestor, token) == "unknown_kid"
    assert await reason_of(attestor, token) == "unknown_kid"
    assert verifier.fetches == 2  # inside the refetch interval: no new fetch
    clock.advance(11)
    assert await reason_of(attestor, token) == "unknown_kid"
    assert verifier.fetches == 3


def _forge(token: str, *, header: dict | None = None, signature: bytes | None = None) -> str:
    head, body, sig = token.split(".")
    if header is not None:
        head = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    if signature is not None:
        sig = base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    return f"{head}.{body}.{sig}"


async def test_every_rejection_has_its_reason(attestor, issuer, clock) -> None:
    mint = issuer.mint
    good = mint(namespace="a", service_account="b")
    kid = jwt.get_unverified_header(good)["kid"]
    cases = {
        "alg_not_allowed": [
            _forge(good, header={"alg": "none", "kid": kid, "typ": "JWT"}, signature=b""),
            jwt.encode(
                {"iss": issuer.issuer, "sub": "x"},
                "secret-key-material-0123456789abcdef",
                "HS256",
                headers={"kid": kid},
            ),
        ],
        "bad_signature": [_forge(good, signature=b"\x01" * 256)],
        "unknown_issuer": [mint(namespace="a", service_account="b", claims={"iss": "https://elsewhere"})],
        "audience_mismatch": [mint(namespace="a", service_account="b", audience=["other", "vault"])],
        "expired": [mint(namespace="a", service_account="b", ttl=600, now=clock.time() - 631)],
        "not_yet_valid": [mint(namespace="a", service_account="b", now=clock.time() + 31)],
        "missing_claims": [
            mint(namespace="a", service_account="b", drop=["kubernetes.io"]),
            mint(namespace="a", service_account="b", claims={"sub": "system:serviceaccount:a:c"}),
            mint(namespace="a", service_account="b", drop=["exp"]),
        ],
        "token_too_large": [mint(namespace="a", service_account="b", claims={"pad": "x" * 16_500})],
        "malformed": ["not-a-jwt", "a.b.c"],
        "unknown_kid": [mint(namespace="a", service_account="b", headers={"kid": "nope"})],
    }
    for reason, tokens in cases.items():
        for token in tokens:
            assert await reason_of(attestor, token) == reason, reason


async def test_expiry_and_not_before_allow_thirty_seconds_of_skew(attestor, issuer, clock) -> None:
    await attestor.attest(issuer.mint(namespace="a", service_account="b", ttl=600, now=clock.time() - 629))
    await attestor.attest(issuer.mint(namespace="a", service_account="b", now=clock.time() + 29))


async def test_verifier_rejects_a_token_for_another_cluster(verifier, issuer) -> None:
    token = issuer.mint(namespace="a", service_account="b")
    other = ClusterTrust(name="staging", issuer="https://other.example", jwks_uri=issuer.jwks_uri)
    with pytest.raises(InvalidSubjectToken) as info:
        await verifier.verify(token, other)
    assert info.value.reason == "wrong_issuer"


async def test_configured_jwks_uri_skips_discovery(clock) -> None:
    async with ClusterIssuer(
        clock=clock.time, issuer="https://kubernetes.default.svc.cluster.local"
    ) as issuer:
        cluster = ClusterTrust(name="prod", issuer=issuer.issuer, jwks_uri=issuer.jwks_uri)
        verifier = JwksVerifier(policy=LOOPBACK, clock=clock)
        try:
            identity = await verifier.verify(issuer.mint(namespace="a", service_account="b"), cluster)
        finally:
            await verifier.close()
    assert identity.namespace == "a"


async def test_discovery_naming_another_issuer_is_refused(clock) -> None:
    async with ClusterIssuer(clock=clock.time, issuer="https://kubernetes.default.svc") as issuer:
        # Registered under the served URL, but the document says the issuer is someone else.
        cluster = ClusterTrust(name="prod", issuer=issuer.url)
        verifier = JwksVerifier(policy=LOOPBACK, clock=clock)
        token = issuer.mint(namespace="a", service_account="b", claims={"iss": issuer.url})
        error = await refusal(verifier, token, cluster)
    assert error.reason == "jwks_unavailable"


async def test_unreachable_jwks_is_a_named_failure(clock) -> None:
    async with ClusterIssuer(clock=clock.time) as issuer:
        token = issuer.mint(namespace="a", service_account="b")
        cluster = ClusterTrust(name="prod", issuer=issuer.issuer)
    verifier = JwksVerifier(policy=LOOPBACK, clock=clock, settings=JwksSettings(fetch_timeout_seconds=2))
    error = await refusal(verifier, token, cluster)
    assert error.reason == "jwks_unavailable"


async def test_verified_token_cache_never_outlives_the_token(attestor, issuer, clock) -> None:
    token = issuer.mint(namespace="a", service_account="b", ttl=10)
    await attestor.attest(token)
    await attestor.attest(token)  # served from the verified-token cache
    clock.advance(41)  # past exp + 30 s skew
    assert await reason_of(attestor, token) == "expired"
