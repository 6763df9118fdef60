"""Pod binding (`pod_binding: true` on a cluster): the token's pod must be live and really its pod.

Real control plane (aiohttp on port 0, SQLite file), real `kubernetes` client with a kubeconfig.
No kube-apiserver can run here, so devkit's ClusterIssuer serves its exact wire format: OIDC
discovery/JWKS, TokenReview, and `GET /api/v1/namespaces/{ns}/pods/{name}` (v1 Pod JSON, or the
apiserver's 404 NotFound / 403 Forbidden Status objects).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import jwt
import pytest

from controlplane.attest import TokenReviewSettings
from controlplane.clock import FakeClock
from controlplane.exchange_settings import ExchangeSettings
from devkit.controlplane_server import LOOPBACK, running_control_plane
from devkit.issuer import ClusterIssuer
from tests.controlplane.conftest import client_for
from tests.controlplane.exchange_support import JWT_TYPE, STATIC_SECRET, Env, allow

NS, SA = "shop", "checkout"


@asynccontextmanager
async def bound_env(
    tmp_path: Path, *, pod_binding: bool = True, verification: str = "jwks"
) -> AsyncIterator[Env]:
    """A control plane whose kubeconfig points at the issuer, one cluster, workload, target, allow policy."""
    clock = FakeClock()
    async with ClusterIssuer(clock=clock.time) as issuer:
        kubeconfig = issuer.write_kubeconfig(tmp_path / "kubeconfig")
        settings = ExchangeSettings(tokenreview=TokenReviewSettings(kubeconfig=str(kubeconfig)))
        async with (
            running_control_plane(
                tmp_path / "cp.db",
                clock=clock,
                kek=b"k" * 32,
                rate_limit_per_minute=100_000,
                exchange=settings,
                outbound=LOOPBACK,
            ) as cp,
            client_for(cp, cp.owner_key) as admin,
            client_for(cp, None) as http,
        ):
            env = Env(cp.url, admin, http, issuer, clock, "", "", "", "")
            cluster = await env.create(
                "/v1/clusters",
                {
                    "name": "prod",
                    "issuer": issuer.issuer,
                    "verification": verification,
                    "pod_binding": pod_binding,
                },
            )
            assert cluster["pod_binding"] is pod_binding
            env.cluster_id = cluster["id"]
            env.workload_id = (
                await env.create(
                    "/v1/workloads",
                    {
                        "name": "checkout",
                        "attestation": {
                            "type": "kubernetes-service-account",
                            "namespace": NS,
                            "service_account": SA,
                            "cluster": "prod",
                        },
                    },
                )
            )["id"]
            env.target_id = (
                await env.create(
                    "/v1/targets", {"name": "api", "host": "api.example", "audience": "https://api.example"}
                )
            )["id"]
            env.provider_id = (
                await env.create(
                    "/v1/credential-providers",
                    {"name": "key", "type": "static", "config": {"value": STATIC_SECRET}},
                )
            )["id"]
            await allow(env)
            yield env


@pytest.fixture
async def env(tmp_path) -> AsyncIterator[Env]:
    async with bound_env(tmp_path) as env:
        yield env


async def assert_denied(env: Env, token: str, reason: str, *, correlation_id: str) -> None:
    body = {"subject_token": token, "subject_token_type": JWT_TYPE, "audience": "https://api.example"}
    resp = await env.http.post("/v1/token-exchange", json=body, headers={"X-Request-Id": correlation_id})
    assert resp.status_code == 401, resp.text
    body = resp.json()
    assert (body["error"], body["reason"]) == ("invalid_subject_token", reason)
    assert body["message"]
    [event] = await env.audit(correlation_id=correlation_id)
    assert (event["type"], event["outcome"], event["reason"]) == (
        "token.denied",
        "denied",
        "invalid_subject_token",
    )
    assert event["extra"]["detail"] == reason


def pod_without_claims(env: Env) -> str:
    """A token whose kubernetes.io claim names no pod (e.g. a TokenRequest not bound to a pod)."""
    return env.token(
        register_pod=False,
        claims={
            "kubernetes.io": {
                "namespace": NS,
                "serviceaccount": {"name": SA, "uid": "00000000-0000-0000-0000-000000000001"},
            }
        },
    )


REASONS = [
    "pod_not_found",
    "pod_uid_mismatch",
    "pod_service_account_mismatch",
    "pod_terminating",
    "pod_claims_missing",
    "pod_lookup_failed",
]


@pytest.mark.parametrize("reason", REASONS)
async def test_each_pod_binding_failure_is_a_401_with_its_reason_and_audited(env: Env, reason: str) -> None:
    token = env.token(pod_name="checkout-0")
    if reason == "pod_not_found":
        env.issuer.delete_pod(NS, "checkout-0")
    elif reason == "pod_uid_mismatch":
        env.issuer.recreate_pod(NS, "checkout-0")
    elif reason == "pod_service_account_mismatch":
        token = env.token(pod_name="impostor-0", register_pod=False)
        env.issuer.add_pod(namespace=NS, name="impostor-0", service_account="default", uid=pod_uid(token))
    elif reason == "pod_terminating":
        env.issuer.terminate_pod(NS, "checkout-0")
    elif reason == "pod_claims_missing":
        token = pod_without_claims(env)
    elif reason == "pod_lookup_failed":
        env.issuer.forbid_pod_reads = True
    await assert_denied(env, token, reason, correlation_id=f"req-{reason}")
    assert env.issuer.pod_requests == (0 if reason == "pod_claims_missing" else 1)


async def test_a_live_matching_pod_gets_its_credential(env: Env) -> None:
    resp = await env.exchange(env.token(pod_name="checkout-0"))
    assert resp.status_code == 200, resp.text
    assert resp.json()["access_token"] == STATIC_SECRET
    assert env.issuer.pod_requests == 1
    [event] = await env.audit(type="token.issued")
    assert event["extra"]["pod_name"] == "checkout-0"


async def test_a_matched_pod_is_cached_by_uid_then_read_again(env: Env) -> None:
    first = env.token(pod_name="checkout-0")
    uid = pod_uid(first)
    assert (await env.exchange(first)).status_code == 200
    # The kubelet's rotated token for the same pod: verified anew, pod answered from the cache.
    env.clock.advance(10)
    rotated = env.token(pod_name="checkout-0", pod_uid=uid, register_pod=False)
    assert (await env.exchange(rotated)).status_code == 200
    assert env.issuer.pod_requests == 1
    # Past the cache window the pod is read again, and its deletion is seen.
    env.issuer.delete_pod(NS, "checkout-0")
    env.clock.advance(31)
    await assert_denied(env, rotated, "pod_not_found", correlation_id="req-after-cache")
    assert env.issuer.pod_requests == 2


async def test_a_different_pod_with_the_same_uid_is_not_served_from_the_cache(env: Env) -> None:
    token = env.token(pod_name="checkout-0")
    assert (await env.exchange(token)).status_code == 200
    other = env.token(pod_name="checkout-1", pod_uid=pod_uid(token), register_pod=False)
    await assert_denied(env, other, "pod_not_found", correlation_id="req-other-name")
    assert env.issuer.pod_requests == 2


async def test_failures_are_not_cached(env: Env) -> None:
    token = env.token(pod_name="checkout-0")
    env.issuer.forbid_pod_reads = True
    await assert_denied(env, token, "pod_lookup_failed", correlation_id="req-forbidden")
    env.issuer.forbid_pod_reads = False
    assert (await env.exchange(token)).status_code == 200
    assert env.issuer.pod_requests == 2


async def test_pod_binding_off_reads_no_pod(tmp_path) -> None:
    async with bound_env(tmp_path, pod_binding=False) as env:
        resp = await env.exchange(env.token(pod_name="ghost-0", register_pod=False))
        assert resp.status_code == 200, resp.text
        assert env.issuer.pod_requests == 0


async def test_pod_binding_applies_to_tokenreview_clusters(tmp_path) -> None:
    async with bound_env(tmp_path, verification="tokenreview") as env:
        token = env.token(pod_name="checkout-0")
        assert (await env.exchange(token)).status_code == 200
        env.issuer.recreate_pod(NS, "checkout-0")
        env.clock.advance(31)
        await assert_denied(env, token, "pod_uid_mismatch", correlation_id="req-tokenreview")
        assert env.issuer.tokenreview_requests == 1 and env.issuer.pod_requests == 2


async def test_proxy_routes_refuse_a_token_whose_pod_is_gone(env: Env) -> None:
    token = env.token(pod_name="checkout-0")
    env.issuer.delete_pod(NS, "checkout-0")
    resp = await env.http.get("/v1/proxy/routes", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 401 and resp.json()["reason"] == "pod_not_found"
    [event] = await env.audit(type="proxy.denied")
    assert event["extra"]["detail"] == "pod_not_found"


async def test_enabling_pod_binding_applies_to_already_verified_tokens(tmp_path) -> None:
    async with bound_env(tmp_path, pod_binding=False) as env:
        token = env.token(pod_name="checkout-0")
        assert (await env.exchange(token)).status_code == 200
        env.issuer.delete_pod(NS, "checkout-0")
        resp = await env.admin.patch(f"/v1/clusters/{env.cluster_id}", json={"pod_binding": True})
        assert resp.status_code == 200 and resp.json()["pod_binding"] is True
        await assert_denied(env, token, "pod_not_found", correlation_id="req-enabled")


@pytest.mark.parametrize("value", ["yes", 1, None])
async def test_pod_binding_must_be_a_boolean(env: Env, value: object) -> None:
    resp = await env.admin.post(
        "/v1/clusters", json={"name": "c2", "issuer": "https://c2.example", "pod_binding": value}
    )
    assert resp.status_code == 400 and resp.json()["field"] == "pod_binding"


async def test_pod_binding_is_in_the_openapi_cluster_schema(env: Env) -> None:
    doc = (await env.admin.get("/openapi.json")).json()
    schemas = [
        op["requestBody"]["content"]["application/json"]["schema"]
        for op in doc["paths"]["/v1/clusters"].values()
        if isinstance(op, dict) and "requestBody" in op
    ]
    assert schemas
    resolved = [
        doc["components"]["schemas"][s["$ref"].rsplit("/", 1)[1]] if "$ref" in s else s for s in schemas
    ]
    assert any(s["properties"]["pod_binding"]["type"] == "boolean" for s in resolved)


def pod_uid(token: str) -> str:
    return jwt.decode(token, options={"verify_signature": False})["kubernetes.io"]["pod"]["uid"]
