"""POST /v1/token-exchange end to end: a real control plane (aiohttp on port 0, SQLite file) and a
real cluster issuer (kube-apiserver's discovery/JWKS wire format; no apiserver can run here)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import jwt
import pytest

from controlplane.clock import FakeClock
from controlplane.exchange_settings import ExchangeSettings
from devkit.controlplane_server import running_control_plane
from devkit.issuer import ClusterIssuer
from tests.controlplane.conftest import client_for
from tests.controlplane.exchange_support import (
    CLIENT_ID,
    CLIENT_SECRET,
    JWT_TYPE,
    STATIC_SECRET,
    Env,
    allow,
    exchange_env,
    serve_token_endpoint,
)


@pytest.fixture
def settings() -> ExchangeSettings:
    return ExchangeSettings(rate_limit_per_minute=1000)


@pytest.fixture
async def env(tmp_path, settings) -> AsyncIterator[Env]:
    async with exchange_env(tmp_path, settings) as env:
        yield env


async def test_static_credential_is_issued_and_audited(env: Env) -> None:
    await allow(env)
    token = env.token(pod_name="checkout-7d9", pod_uid="uid-123")
    resp = await env.http.post(
        "/v1/token-exchange",
        headers={"X-Request-Id": "req-issued-1"},
        json={
            "subject_token": token,
            "subject_token_type": JWT_TYPE,
            "audience": "https://api.example",
            "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
        },
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "access_token": STATIC_SECRET,
        "token_type": "Bearer",
        "expires_in": 120,
        "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
    }
    assert resp.headers["Cache-Control"] == "no-store"
    [event] = await env.audit(type="token.issued")
    assert event["workload_id"] == env.workload_id and event["target_service"] == "example-api"
    assert (event["audience"], event["ttl_seconds"], event["correlation_id"]) == (
        "https://api.example",
        120,
        "req-issued-1",
    )
    assert event["extra"]["pod_name"] == "checkout-7d9" and event["extra"]["pod_uid"] == "uid-123"
    metrics = (await env.http.get("/metrics")).text
    assert 'sesame_tokens_issued_total{target="example-api"} 1.0' in metrics


async def test_form_encoded_exchange_is_accepted(env: Env) -> None:
    await allow(env)
    resp = await env.http.post(
        "/v1/token-exchange",
        data={
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token": env.token(),
            "subject_token_type": JWT_TYPE,
            "audience": "https://api.example",
        },
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["access_token"] == STATIC_SECRET


REJECTIONS = [
    # (case, status, code)
    ("expired_token", 401, "invalid_subject_token"),
    ("unknown_issuer", 401, "invalid_subject_token"),
    ("wrong_audience", 401, "invalid_subject_token"),
    ("unknown_workload", 404, "unknown_workload"),
    ("revoked_workload", 403, "workload_revoked"),
    ("unknown_target", 404, "unknown_target"),
    ("no_policy", 403, "policy_denied"),
    ("explicit_deny", 403, "policy_denied"),
    ("upstream_down", 503, "provider_unavailable"),
    ("missing_audience", 400, "invalid_request"),
    ("wrong_token_type", 400, "invalid_request"),
]


@pytest.mark.parametrize(("case", "status", "code"), REJECTIONS)
async def test_every_rejection_has_its_code_and_an_audit_event(
    env: Env, case: str, status: int, code: str
) -> None:
    body = {"subject_token": env.token(), "subject_token_type": JWT_TYPE, "audience": "https://api.example"}
    if case != "no_policy":
        await allow(env)
    if case == "expired_token":
        body["subject_token"] = env.token(ttl=60, now=env.clock.time() - 600)
    elif case == "unknown_issuer":
        body["subject_token"] = env.token(claims={"iss": "https://other-cluster.example"})
    elif case == "wrong_audience":
        body["subject_token"] = env.token(audience="vault")
    elif case == "unknown_workload":
        body["subject_token"] = env.token(service_account="stranger")
    elif case == "revoked_workload":
        resp = await env.admin.patch(f"/v1/workloads/{env.workload_id}", json={"status": "revoked"})
        assert resp.status_code == 200, resp.text
    elif case == "unknown_target":
        body["audience"] = "https://nobody.example"
    elif case == "explicit_deny":
        await env.create(
            "/v1/policies", {"target_id": env.target_id, "provider_id": env.provider_id, "effect": "deny"}
        )
    elif case == "upstream_down":
        broken = await env.create(
            "/v1/credential-providers",
            {
                "name": "down",
                "type": "oauth2-client-credentials",
                "config": {"token_url": "http://127.0.0.1:9/token", "client_id": "x", "client_secret": "y"},
            },
        )
        resp = await env.admin.patch(
            f"/v1/policies/{(await env.admin.get('/v1/policies')).json()['data'][0]['id']}",
            json={"provider_id": broken["id"]},
        )
        assert resp.status_code == 200, resp.text
    elif case == "missing_audience":
        del body["audience"]
    elif case == "wrong_token_type":
        body["subject_token_type"] = "urn:ietf:params:oauth:token-type:saml2"
    resp = await env.http.post("/v1/token-exchange", json=body, headers={"X-Request-Id": f"req-{case}"})
    assert resp.status_code == status, resp.text
    assert resp.json()["error"] == code and resp.json()["message"]
    [event] = await env.audit(correlation_id=f"req-{case}")
    assert (event["type"], event["outcome"], event["reason"]) == ("token.denied", "denied", code)
    assert f'sesame_tokens_denied_total{{reason="{code}"}} 1.0' in (await env.http.get("/metrics")).text


async def test_invalid_subject_token_names_the_attestation_reason(env: Env) -> None:
    resp = await env.exchange(env.token(ttl=60, now=env.clock.time() - 600))
    assert resp.json()["reason"] == "expired"
    [event] = await env.audit(type="token.denied")
    assert event["extra"]["detail"] == "expired"


@pytest.mark.parametrize("settings", [ExchangeSettings(rate_limit_per_minute=2)])
async def test_exchange_rate_limit_per_workload(env: Env) -> None:
    await allow(env)
    assert [(await env.exchange()).status_code for _ in range(2)] == [200, 200]
    resp = await env.exchange()
    assert resp.status_code == 429 and resp.json()["error"] == "rate_limited"
    assert int(resp.headers["Retry-After"]) >= 1
    assert (await env.audit(type="token.denied"))[0]["reason"] == "rate_limited"
    env.clock.advance(61)
    assert (await env.exchange()).status_code == 200


async def test_signed_jwts_verify_against_jwks_over_http_across_rotation(env: Env) -> None:
    provider = await env.create(
        "/v1/credential-providers", {"name": "jwt", "type": "signed-jwt", "config": {}}
    )
    await allow(env, provider_id=provider["id"], ttl=600)
    old = (await env.exchange()).json()
    assert old["issued_token_type"] == JWT_TYPE and old["expires_in"] == 600
    rotated = await env.admin.post("/v1/keys/rotate")
    assert rotated.status_code == 200, rotated.text
    new = (await env.exchange()).json()
    discovery = (await env.http.get("/.well-known/openid-configuration")).json()
    assert discovery["issuer"] == env.url and discovery["jwks_uri"] == env.url + "/v1/jwks"
    # Fetched over HTTP, as a target would, and verified with standard tooling.
    keys = jwt.PyJWKSet.from_dict((await env.http.get(discovery["jwks_uri"])).json())
    kids = set()
    for issued in (old, new):
        kid = jwt.get_unverified_header(issued["access_token"])["kid"]
        claims = jwt.decode(
            issued["access_token"],
            keys[kid].key,
            algorithms=["ES256"],
            audience="https://api.example",
            issuer=env.url,
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
        )
        assert claims["sub"] == "sesame://prod/ns/shop/sa/checkout"
        assert claims["exp"] - claims["iat"] == 600
        kids.add(kid)
    assert len(kids) == 2


async def test_rotated_key_stays_in_jwks_until_every_token_it_signed_has_expired(tmp_path) -> None:
    """Both halves of the rotation promise, on an injected clock: the previous key is published
    while a token it signed can still be valid, and dropped once all of them have expired."""
    settings = ExchangeSettings(rate_limit_per_minute=1000, max_signed_jwt_ttl_seconds=600)
    async with exchange_env(tmp_path, settings) as env:
        provider = await env.create(
            "/v1/credential-providers", {"name": "jwt", "type": "signed-jwt", "config": {}}
        )
        await allow(env, provider_id=provider["id"], ttl=3600)  # capped by the 600 s signed-JWT maximum
        old = (await env.exchange()).json()["access_token"]
        old_kid = jwt.get_unverified_header(old)["kid"]
        old_exp = jwt.decode(old, options={"verify_signature": False})["exp"]
        rotated = await env.admin.post("/v1/keys/rotate")
        assert rotated.status_code == 200 and rotated.json()["retired"] == [old_kid]
        new_kid = rotated.json()["kid"]

        async def published() -> dict[str, jwt.PyJWK]:
            resp = await env.http.get("/v1/jwks")
            assert resp.status_code == 200
            return {k.key_id: k for k in jwt.PyJWKSet.from_dict(resp.json()).keys}

        env.clock.advance(599)  # past the key reload interval; the old token is still valid
        assert env.clock.time() < old_exp
        keys = await published()
        assert set(keys) == {old_kid, new_kid}
        claims = jwt.decode(
            old,
            keys[old_kid].key,
            algorithms=["ES256"],
            audience="https://api.example",
            options={"verify_exp": False, "verify_iat": False},
        )
        assert claims["exp"] == old_exp

        env.clock.advance(1)  # every token the old key signed has now expired
        assert env.clock.time() >= old_exp
        assert set(await published()) == {new_kid}


async def test_key_rotation_needs_the_owner_role(env: Env) -> None:
    resp = await env.admin.post("/v1/api-keys", json={"name": "ops", "role": "admin"})
    admin_key = resp.json()["key"]
    resp = await env.http.post("/v1/keys/rotate", headers={"Authorization": f"Bearer {admin_key}"})
    assert resp.status_code == 403 and resp.json()["error"] == "forbidden"


@pytest.mark.parametrize("auth_method", ["client_secret_basic", "client_secret_post"])
async def test_oauth2_provider_through_the_exchange(env: Env, auth_method: str) -> None:
    async with serve_token_endpoint() as endpoint:
        provider = await env.create(
            "/v1/credential-providers",
            {
                "name": "oauth",
                "type": "oauth2-client-credentials",
                "config": {
                    "token_url": endpoint.url,
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                    "auth_method": auth_method,
                    "scopes": ["read"],
                    "ca_pem": endpoint.ca_pem,
                },
            },
        )
        await allow(env, provider_id=provider["id"], ttl=900)
        first, second = (await env.exchange()).json(), (await env.exchange()).json()
    assert first["access_token"] == second["access_token"] == "upstream-1"
    assert first["expires_in"] == 900 and len(endpoint.calls) == 1


async def test_approval_flow_end_to_end(env: Env) -> None:
    await allow(env, effect="require_approval")
    pending = await env.exchange()
    assert pending.status_code == 202, pending.text
    approval_id = pending.json()["approval_id"]
    assert pending.json() == {"status": "approval_pending", "approval_id": approval_id}
    assert (await env.exchange()).json()["approval_id"] == approval_id  # one request, not one per call
    listed = (await env.admin.get("/v1/approvals", params={"status": "pending"})).json()["data"]
    assert [a["id"] for a in listed] == [approval_id]
    resp = await env.admin.post(f"/v1/approvals/{approval_id}/approve", json={"window_seconds": 600})
    assert resp.status_code == 200 and resp.json()["status"] == "approved"
    redeny = await env.admin.post(f"/v1/approvals/{approval_id}/deny")
    assert redeny.status_code == 409, redeny.text
    granted = await env.exchange()
    assert granted.status_code == 200 and granted.json()["access_token"] == STATIC_SECRET
    env.clock.advance(601)  # the window closes: a new approval is requested
    again = await env.exchange()
    assert again.status_code == 202 and again.json()["approval_id"] != approval_id
    denied = await env.admin.post(f"/v1/approvals/{again.json()['approval_id']}/deny")
    assert denied.status_code == 200
    refused = await env.exchange()
    assert refused.status_code == 403 and refused.json()["error"] == "policy_denied"
    types = [e["type"] for e in await env.audit()]
    assert {"approval.requested", "approval.approved", "approval.denied", "token.issued"} <= set(types)


async def test_tokenreview_cluster_through_the_real_kubernetes_client(tmp_path) -> None:
    """TokenReview mode through the kubernetes client and a kubeconfig.

    No kube-apiserver can run here: the issuer serves the TokenReview API's JSON."""
    clock = FakeClock()
    async with ClusterIssuer(clock=clock.time, issuer="https://kubernetes.default.svc") as issuer:
        kubeconfig = issuer.write_kubeconfig(tmp_path / "kubeconfig")
        from controlplane.attest import TokenReviewSettings

        settings = ExchangeSettings(tokenreview=TokenReviewSettings(kubeconfig=str(kubeconfig)))
        async with (
            running_control_plane(tmp_path / "cp.db", clock=clock, kek=b"k" * 32, exchange=settings) as plane,
            client_for(plane, plane.owner_key) as admin,
        ):
            env = Env(plane.url, admin, admin, issuer, clock, "", "", "", "")
            await env.create(
                "/v1/clusters", {"name": "prod", "issuer": issuer.issuer, "verification": "tokenreview"}
            )
            wl = await env.create(
                "/v1/workloads",
                {
                    "name": "w",
                    "attestation": {
                        "type": "kubernetes-service-account",
                        "namespace": "shop",
                        "service_account": "checkout",
                    },
                },
            )
            tg = await env.create(
                "/v1/targets", {"name": "t", "host": "api.example", "audience": "https://api.example"}
            )
            provider = await env.create(
                "/v1/credential-providers", {"name": "p", "type": "static", "config": {"value": "v"}}
            )
            await env.create(
                "/v1/policies",
                {
                    "workload_id": wl["id"],
                    "target_id": tg["id"],
                    "provider_id": provider["id"],
                    "effect": "allow",
                },
            )
            token = env.token()
            ok = await env.exchange(token)
            assert ok.status_code == 200, ok.text
            issuer.revoke(token)
            clock.advance(61)
            refused = await env.exchange(token)
            assert refused.status_code == 401 and refused.json()["reason"] == "token_review_rejected"
    assert issuer.tokenreview_requests == 2


async def test_no_token_or_secret_text_in_logs_or_audit_rows(env: Env, caplog, tmp_path) -> None:
    caplog.set_level(logging.DEBUG)
    await allow(env)
    token = env.token()
    assert (await env.exchange(token)).status_code == 200
    assert (await env.exchange(token, audience="https://nobody.example")).status_code == 404
    assert (await env.exchange(token[:-4] + "AAAA")).status_code == 401
    export = (await env.admin.get("/v1/audit/export", params={"format": "json"})).text
    signature = token.rsplit(".", 1)[1]
    for text in (caplog.text, export):
        assert STATIC_SECRET not in text
        assert signature not in text and token.split(".")[1] not in text


async def test_credential_with_a_control_character_is_refused_and_audited(env: Env) -> None:
    """A secret that would split the header the proxy writes it into never reaches a workload."""
    provider = await env.create(
        "/v1/credential-providers",
        {"name": "split", "type": "static", "config": {"value": "abc\r\nX-Injected-By-Token: 1"}},
    )
    await allow(env, provider_id=provider["id"])
    resp = await env.exchange()
    assert resp.status_code == 502
    assert resp.json()["error"] == "invalid_credential"
    assert "X-Injected" not in resp.text
    denied = await env.audit(type="token.denied")
    assert denied[0]["reason"] == "invalid_credential"
    assert "X-Injected" not in str(denied)
