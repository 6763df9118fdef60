"""/healthz, /readyz, /metrics, /openapi.json."""

from __future__ import annotations

from openapi_spec_validator import validate

from controlplane.appkeys import READY_CHECKS, ROUTES
from controlplane.errors import StoreError
from controlplane.openapi import build_openapi
from controlplane.routes import API_KEY_AUTH, SA_TOKEN_AUTH, Route
from controlplane.validation import Obj, Str
from tests.controlplane.conftest import workload_body


async def test_healthz_and_readyz_are_public(control_plane):
    import httpx

    async with httpx.AsyncClient(base_url=control_plane.url) as c:
        assert (await c.get("/healthz")).status_code == 200
        ready = await c.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"database": "ok", "audit_writer": "ok"}


async def test_readyz_is_503_with_the_failing_check(admin, control_plane):
    async def broken() -> None:
        raise StoreError("database is locked")

    control_plane.app[READY_CHECKS]["replica"] = broken
    resp = await admin.get("/readyz")
    assert resp.status_code == 503
    assert resp.json()["checks"] == {"database": "ok", "audit_writer": "ok", "replica": "database is locked"}


async def test_metrics_count_requests_by_route_and_status(admin, control_plane):
    from controlplane.appkeys import METRICS

    await admin.post("/v1/workloads", json=workload_body())
    await admin.get("/v1/workloads/wl_missing")
    control_plane.app[METRICS].token_issued("stripe")
    control_plane.app[METRICS].token_denied("policy_denied")
    text = (await admin.get("/metrics")).text
    assert 'sesame_http_requests_total{method="POST",route="/v1/workloads",status="201"} 1.0' in text
    assert 'sesame_http_requests_total{method="GET",route="/v1/workloads/{id}",status="404"} 1.0' in text
    assert "sesame_http_request_duration_seconds_bucket" in text
    assert 'sesame_tokens_issued_total{target="stripe"} 1.0' in text
    assert 'sesame_tokens_denied_total{reason="policy_denied"} 1.0' in text
    assert 'sesame_audit_events_total{type="workload.created"} 1.0' in text


async def test_openapi_is_valid_3_1_and_covers_every_registered_route(admin, control_plane):
    doc = (await admin.get("/openapi.json")).json()
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    for route in control_plane.app[ROUTES]:
        op = doc["paths"][route.path][route.method.lower()]
        assert op["summary"] == route.summary
        if route.permission is not None:
            assert op["x-permission"] == route.permission.name
    registered = {
        (r.method, r.resource.canonical) for r in control_plane.app.router.routes() if r.method != "HEAD"
    }
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert registered == documented
    workloads_post = doc["paths"]["/v1/workloads"]["post"]
    schema = workloads_post["requestBody"]["content"]["application/json"]["schema"]
    assert schema["additionalProperties"] is False and "attestation" in schema["required"]


async def test_openapi_security_requirements_follow_the_route_table(admin, control_plane):
    """Permissioned routes need the API key, proxy-facing routes the SA token, public ones nothing."""
    doc = (await admin.get("/openapi.json")).json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes[API_KEY_AUTH]["scheme"] == schemes[SA_TOKEN_AUTH]["scheme"] == "bearer"
    seen = {"api key": 0, "sa token": 0, "public": 0}
    for route in control_plane.app[ROUTES]:
        security = doc["paths"][route.path][route.method.lower()]["security"]
        if route.permission is not None:
            assert security == [{API_KEY_AUTH: []}], (route.method, route.path)
            seen["api key"] += 1
        elif route.path.startswith("/v1/proxy/"):
            assert security == [{SA_TOKEN_AUTH: []}], (route.method, route.path)
            seen["sa token"] += 1
        else:
            assert security == [], (route.method, route.path)
            seen["public"] += 1
    assert min(seen.values()) > 0, seen
    public = {p for p, ops in doc["paths"].items() for op in ops.values() if op["security"] == []}
    assert {"/healthz", "/v1/jwks", "/v1/token-exchange"} <= public
    exchange = doc["paths"]["/v1/token-exchange"]["post"]
    assert "subject_token" in exchange["description"]
    body = exchange["requestBody"]["content"]["application/json"]["schema"]
    assert "service-account token" in body["properties"]["subject_token"]["description"]


def test_routes_added_later_are_documented():
    async def handler(request):  # pragma: no cover - never called
        raise NotImplementedError

    doc = build_openapi(
        [
            Route(
                "POST",
                "/v1/things/{id}/poke",
                handler,
                None,
                "Poke a thing",
                request=Obj({"why": Str(required=False)}),
            )
        ]
    )
    validate(doc)
    op = doc["paths"]["/v1/things/{id}/poke"]["post"]
    assert op["parameters"][0]["name"] == "id" and op["security"] == []


async def test_stopped_audit_writer_makes_readyz_503_and_mutations_fail_closed(admin, control_plane):
    """No request may answer success without its audit row: readiness and writes both say so."""
    from controlplane.appkeys import AUDIT

    await control_plane.app[AUDIT].close()
    ready = await admin.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {
        "status": "unavailable",
        "checks": {"database": "ok", "audit_writer": "audit writer is not running"},
    }
    assert (await admin.get("/healthz")).status_code == 200  # liveness does not depend on it
    created = await admin.post("/v1/workloads", json=workload_body())
    assert created.status_code == 503
    assert created.json()["error"] == "audit_unavailable"


async def test_readyz_times_out_a_hanging_check(admin, control_plane, monkeypatch):
    import asyncio

    from controlplane.api import probes

    async def hangs() -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(probes, "CHECK_TIMEOUT_SECONDS", 0.05)
    control_plane.app[READY_CHECKS]["stuck"] = hangs
    resp = await admin.get("/readyz")
    assert resp.status_code == 503
    assert resp.json()["checks"]["stuck"] == "timed out"
