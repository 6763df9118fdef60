"""TokenReview attestation through the real `kubernetes` client.

No kube-apiserver can run here: the devkit issuer serves the `authentication.k8s.io/v1`
TokenReview API with the apiserver's JSON, and the client reaches it through a kubeconfig.
"""

from __future__ import annotations

import pytest

from controlplane.attest import (
    Attestor,
    ClusterTrust,
    JwksVerifier,
    TokenReviewSettings,
    TokenReviewVerifier,
)
from controlplane.clock import FakeClock
from devkit.controlplane_server import LOOPBACK
from devkit.issuer import ClusterIssuer
from tests.controlplane.conftest import Clusters, reason_of, refusal


@pytest.fixture
async def verifier(issuer: ClusterIssuer, clock: FakeClock, tmp_path):
    kubeconfig = issuer.write_kubeconfig(tmp_path / "kubeconfig")
    verifier = TokenReviewVerifier(settings=TokenReviewSettings(kubeconfig=str(kubeconfig)), clock=clock)
    yield verifier
    await verifier.close()


@pytest.fixture
async def attestor(issuer: ClusterIssuer, verifier: TokenReviewVerifier, clock: FakeClock):
    cluster = ClusterTrust(name="prod", issuer=issuer.issuer, verification="tokenreview")
    jwks = JwksVerifier(policy=LOOPBACK, clock=clock)
    yield Attestor(clusters=Clusters(cluster), jwks=jwks, tokenreview=verifier)
    await jwks.close()


async def test_tokenreview_identity_comes_from_the_apiserver(attestor, issuer) -> None:
    token = issuer.mint(namespace="shop", service_account="checkout", pod_name="p1", pod_uid="u1")
    identity = await attestor.attest(token)
    assert (identity.namespace, identity.service_account, identity.pod_name, identity.pod_uid) == (
        "shop",
        "checkout",
        "p1",
        "u1",
    )
    assert issuer.tokenreview_requests == 1


async def test_result_is_cached_for_sixty_seconds_at_most(attestor, issuer, clock) -> None:
    token = issuer.mint(namespace="a", service_account="b", ttl=3600)
    await attestor.attest(token)
    clock.advance(59)
    await attestor.attest(token)
    assert issuer.tokenreview_requests == 1
    clock.advance(2)
    await attestor.attest(token)
    assert issuer.tokenreview_requests == 2


async def test_cache_never_outlives_the_token(attestor, issuer, clock) -> None:
    token = issuer.mint(namespace="a", service_account="b", ttl=20)
    await attestor.attest(token)
    clock.advance(21)
    assert await reason_of(attestor, token) == "token_review_rejected"
    assert issuer.tokenreview_requests == 2


async def test_revoked_token_is_rejected_once_the_cache_lapses(attestor, issuer, clock) -> None:
    token = issuer.mint(namespace="a", service_account="b")
    await attestor.attest(token)
    issuer.revoke(token)
    clock.advance(61)
    assert await reason_of(attestor, token) == "token_review_rejected"


async def test_audience_is_checked_by_the_review(attestor, issuer) -> None:
    token = issuer.mint(namespace="a", service_account="b", audience="vault")
    assert await reason_of(attestor, token) == "token_review_rejected"


async def test_reviewer_without_credentials_is_a_named_failure(issuer, clock, tmp_path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    issuer.write_kubeconfig(kubeconfig)
    kubeconfig.write_text(kubeconfig.read_text().replace(issuer.reviewer_token, "wrong"))
    verifier = TokenReviewVerifier(settings=TokenReviewSettings(kubeconfig=str(kubeconfig)), clock=clock)
    cluster = ClusterTrust(name="prod", issuer=issuer.issuer, verification="tokenreview")
    token = issuer.mint(namespace="a", service_account="b")
    error = await refusal(verifier, token, cluster)
    assert error.reason == "token_review_failed"
    assert token not in str(error) and error.__cause__ is None
