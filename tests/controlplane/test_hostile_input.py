"""Hostile input found by fuzzing the API against /openapi.json (schemathesis) and by hand.

Each answer is a JSON error with a stable code (never a 500 or a plain-text body), nothing is
stored, and refusals on the public routes are audited. Real control plane and cluster issuer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from controlplane.exchange_settings import ExchangeSettings
from controlplane.validation import MAX_JSON_DEPTH
from tests.controlplane.conftest import client_for, workload_body
from tests.controlplane.exchange_support import JWT_TYPE, Env, exchange_env

REVIEW = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}
BODY_ROUTES = (
    "/v1/workloads",
    "/v1/targets",
    "/v1/clusters",
    "/v1/policies",
    "/v1/credential-providers",
    "/v1/api-keys",
    "/v1/audit/prune",
)


@pytest.fixture
async def env(tmp_path) -> AsyncIterator[Env]:
    async with exchange_env(tmp_path, ExchangeSettings()) as env:
        yield env


def assert_json_error(resp: httpx.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["error"] == code and isinstance(body["message"], str), body
    return body


def pod_review(**pod_fields) -> dict:
    pod = {
        "metadata": {"name": "p", "annotations": {"sesame.dev/inject": "true"}},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]},
    }
    for path, value in pod_fields.items():
        section, key = path.split("__")
        pod[section][key] = value
    request = {
        "uid": "u-1",
        "operation": "CREATE",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "namespace": "shop",
        "object": pod,
    }
    return {**REVIEW, "request": request}


async def test_deeply_nested_json_is_a_400_on_every_body_route(env: Env) -> None:
    deep = ("[" * (MAX_JSON_DEPTH * 100)).encode()
    for path in BODY_ROUTES:
        assert_json_error(await env.admin.post(path, content=deep), 400, "invalid_request")
    for path in ("/v1/token-exchange", "/v1/admission/mutate/pod"):
        assert_json_error(await env.http.post(path, content=deep), 400, "invalid_request")
    sa = {"Authorization": f"Bearer {env.token()}"}
    for path in ("/v1/proxy/heartbeat", "/v1/proxy/observations"):
        assert_json_error(await env.http.post(path, content=deep, headers=sa), 400, "invalid_request")


async def test_nesting_up_to_the_limit_is_still_parsed(env: Env) -> None:
    nested: object = "x"
    for _ in range(MAX_JSON_DEPTH - 1):
        nested = [nested]
    body = {"subject_token": "a.b.c", "subject_token_type": JWT_TYPE, "audience": "https://api.example"}
    resp = await env.http.post("/v1/token-exchange", json={**body, "scope": nested})
    assert_json_error(resp, 400, "invalid_request")
    assert resp.json()["field"] == "scope"  # decoded fine; refused by the schema, not the depth guard


async def test_lone_surrogates_are_refused_and_nothing_is_stored(env: Env) -> None:
    workload = json.dumps(workload_body(name="\ud800")).encode()  # json.dumps escapes it as \ud800
    assert_json_error(await env.admin.post("/v1/workloads", content=workload), 400, "invalid_request")
    listed = await env.admin.get("/v1/workloads", params={"limit": 100})
    assert [w["name"] for w in listed.json()["data"]] == ["checkout"]

    exchange = {"subject_token": "a.b.c", "subject_token_type": JWT_TYPE, "audience": "\udfff"}
    resp = await env.http.post("/v1/token-exchange", content=json.dumps(exchange).encode())
    assert_json_error(resp, 400, "invalid_request")  # was 503 audit_unavailable
    assert_json_error(
        await env.http.post("/v1/token-exchange", content=b'"\xed\xa0\x80"'), 400, "invalid_request"
    )

    sa = {"Authorization": f"Bearer {env.token()}"}
    heartbeat = json.dumps({"pod": "\ud800", "version": "1"}).encode()
    assert_json_error(
        await env.http.post("/v1/proxy/heartbeat", content=heartbeat, headers=sa), 400, "invalid_request"
    )
    emoji = json.dumps({"pod": "pod-\U0001f600", "version": "1"}).encode()  # a valid surrogate *pair*
    assert (await env.http.post("/v1/proxy/heartbeat", content=emoji, headers=sa)).status_code == 204
    assert (await env.admin.get("/v1/audit/verify")).json()["ok"] is True


async def test_refused_exchange_bodies_are_audited_as_token_denied(env: Env) -> None:
    before = len(await env.audit(type="token.denied"))
    assert_json_error(await env.http.post("/v1/token-exchange", content=b"[" * 5000), 400, "invalid_request")
    assert len(await env.audit(type="token.denied")) == before + 1


@pytest.mark.parametrize(
    "claims",
    [
        {
            "kubernetes.io": {
                "namespace": "shop",
                "serviceaccount": {"name": "checkout"},
                "pod": {"name": 5, "uid": []},
            }
        },
        {"kubernetes.io": {"namespace": "shop", "serviceaccount": {"name": "checkout"}, "pod": "p"}},
    ],
)
async def test_signed_token_with_odd_pod_claims_still_heartbeats(env: Env, claims) -> None:
    """Pod claims of the wrong type are ignored (were bound into SQL → 503 store_unavailable)."""
    token = env.issuer.mint(namespace="shop", service_account="checkout", claims=claims)
    resp = await env.http.post(
        "/v1/proxy/heartbeat", json={"pod": "p", "version": "1"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status_code == 204, resp.text


async def test_token_with_non_finite_expiry_is_refused_and_audited(env: Env) -> None:
    token = env.issuer.mint(namespace="shop", service_account="checkout", claims={"exp": float("inf")})
    assert_json_error(await env.exchange(token), 401, "invalid_subject_token")
    denied = await env.audit(type="token.denied")
    assert denied[0]["reason"] == "invalid_subject_token"


@pytest.mark.parametrize(
    "review, field",
    [
        ({**REVIEW, "request": {"uid": "u", "kind": "Pod", "operation": "CREATE"}}, "request.kind"),
        ({**REVIEW, "request": {"uid": "u", "kind": {"kind": "Pod"}, "operation": 5}}, "request.operation"),
        (pod_review(metadata__annotations=["sesame.dev/inject"]), "request.object.metadata.annotations"),
        (pod_review(metadata__annotations={"sesame.dev/inject": 5}), "request.object.metadata.annotations"),
        (pod_review(metadata__name=["x"]), "request.object.metadata.name"),
        (pod_review(spec__containers=[5]), "request.object.spec.containers"),
        (pod_review(spec__containers=[{"name": ["a"]}]), "request.object.spec.containers[0].name"),
        (pod_review(spec__containers=[{"name": "a", "env": [5]}]), "request.object.spec.containers[0].env"),
        (
            pod_review(spec__containers=[{"name": "a", "env": [{"name": "JAVA_TOOL_OPTIONS", "value": 5}]}]),
            "request.object.spec.containers[0].env[0].value",
        ),
        (
            pod_review(spec__containers=[{"name": "a", "volumeMounts": [{"mountPath": 5}]}]),
            "request.object.spec.containers[0].volumeMounts[0].mountPath",
        ),
        (pod_review(spec__volumes=[{"name": ["x"]}]), "request.object.spec.volumes[0].name"),
        ({**pod_review(), "request": {**pod_review()["request"], "userInfo": 5}}, "request.userInfo"),
    ],
)
async def test_malformed_admission_review_is_a_400_and_audited(env: Env, review, field) -> None:
    """These crashed the webhook with 500s (AttributeError / TypeError in the injector)."""
    for path in ("/v1/admission/mutate", "/v1/admission/mutate/namespace"):
        resp = await env.http.post(path, json=review)
        assert assert_json_error(resp, 400, "invalid_request")["field"] == field
    events = await env.audit(type="admission.invalid")
    assert len(events) == 2
    assert events[0]["outcome"] == "denied" and events[0]["extra"]["field"] == field


async def test_integral_numbers_written_as_floats_are_integers(env: Env) -> None:
    """JSON Schema counts 443.0 as an integer, so the API accepts what its OpenAPI document allows."""
    resp = await env.admin.post("/v1/targets", json={"name": "t2", "host": "api.two", "port": 8443.0})
    assert resp.status_code == 201, resp.text
    assert (await env.admin.get(f"/v1/targets/{resp.json()['id']}")).json()["port"] == 8443
    resp = await env.admin.post("/v1/targets", json={"name": "t3", "host": "api.three", "port": 8443.5})
    assert assert_json_error(resp, 400, "invalid_request")["field"] == "port"


async def test_openapi_patterns_are_anchored_like_the_validator(admin) -> None:
    """The validator full-matches; an unanchored JSON Schema pattern would promise `Shop!` is a namespace."""
    doc = (await admin.get("/openapi.json")).json()
    schema = doc["paths"]["/v1/workloads"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    pattern = schema["properties"]["attestation"]["properties"]["namespace"]["pattern"]
    assert pattern.startswith("^") and pattern.endswith("$")
    body = workload_body(namespace="x-shop-")  # contains a match, is not one
    assert_json_error(await admin.post("/v1/workloads", json=body), 400, "invalid_request")


async def test_openapi_documents_csv_export_and_admission_bodies(admin) -> None:
    doc = (await admin.get("/openapi.json")).json()
    export = doc["paths"]["/v1/audit/export"]["get"]["responses"]["200"]["content"]
    assert set(export) == {"application/json", "text/csv"}
    resp = await admin.get("/v1/audit/export", params={"format": "csv"})
    assert resp.headers["content-type"].split(";")[0] in export
    for path in ("/v1/admission/mutate", "/v1/admission/mutate/{scope}"):
        assert doc["paths"][path]["post"]["requestBody"]["required"] is True


async def test_long_query_strings_and_tokens_within_documented_limits_get_json_answers(control_plane) -> None:
    """aiohttp's 8 KiB default answered these in text/plain before any middleware ran."""
    async with (
        client_for(control_plane, control_plane.owner_key) as admin,
        client_for(control_plane, None) as http,
    ):
        issuer = "\u00b4" * 2048  # a documented filter value, 12 KiB once percent-encoded
        resp = await admin.get("/v1/clusters", params={"issuer": issuer})
        assert resp.status_code in (200, 400), resp.text
        assert resp.headers["content-type"].startswith("application/json")
        token = "a" * 60_000
        resp = await http.get("/v1/proxy/routes", headers={"Authorization": f"Bearer {token}"})
        assert_json_error(resp, 401, "invalid_subject_token")
