"""/v1/clusters, /v1/targets, /v1/policies: validation, defaults, references, filters."""

from __future__ import annotations

from tests.controlplane.conftest import workload_body


async def test_cluster_defaults_and_conflicts(admin):
    resp = await admin.post("/v1/clusters", json={"name": "prod", "issuer": "https://kubernetes.default.svc"})
    assert resp.status_code == 201
    body = resp.json()
    assert body["id"].startswith("cl_") and body["audience"] == "sesame" and body["verification"] == "jwks"
    dup = await admin.post("/v1/clusters", json={"name": "other", "issuer": "https://kubernetes.default.svc"})
    assert dup.status_code == 409
    bad_body = {"name": "x", "issuer": "https://i.example", "verification": "magic"}
    bad = await admin.post("/v1/clusters", json=bad_body)
    assert bad.status_code == 400 and bad.json()["field"] == "verification"
    found = (await admin.get("/v1/clusters", params={"issuer": "https://kubernetes.default.svc"})).json()
    assert [c["name"] for c in found["data"]] == ["prod"]


async def test_target_defaults_and_injection_rules(admin):
    body = (await admin.post("/v1/targets", json={"name": "stripe", "host": "api.stripe.com"})).json()
    assert (body["port"], body["scheme"], body["tls"]) == (443, "https", "intercept")
    assert body["audience"] == "https://api.stripe.com"
    assert body["injection"] == {"type": "bearer", "name": None, "prefix": None}
    header = await admin.post(
        "/v1/targets", json={"name": "h", "host": "h.example", "injection": {"type": "header"}}
    )
    assert header.status_code == 400 and header.json()["field"] == "injection.name"
    plain = await admin.post(
        "/v1/targets",
        json={
            "name": "p",
            "host": "p.example",
            "scheme": "http",
            "port": 8080,
            "tls": "none",
            "injection": {"type": "query", "name": "key"},
        },
    )
    assert plain.status_code == 201 and plain.json()["audience"] == "http://p.example:8080"
    bad_tls = await admin.post("/v1/targets", json={"name": "q", "host": "q.example", "scheme": "http"})
    assert bad_tls.status_code == 400 and bad_tls.json()["field"] == "tls"
    bad_host = await admin.post("/v1/targets", json={"name": "r", "host": "not a host"})
    assert bad_host.status_code == 400 and bad_host.json()["field"] == "host"
    patched = await admin.patch(f"/v1/targets/{body['id']}", json={"injection": {"type": "basic"}})
    assert patched.status_code == 200 and patched.json()["injection"]["type"] == "basic"


async def test_policy_references_must_exist_and_scope_is_unique(admin):
    wl = (await admin.post("/v1/workloads", json=workload_body())).json()
    tg = (await admin.post("/v1/targets", json={"name": "api", "host": "api.example.com"})).json()
    pr = (
        await admin.post(
            "/v1/credential-providers", json={"name": "p", "type": "static", "config": {"value": "v"}}
        )
    ).json()
    missing = await admin.post(
        "/v1/policies", json={"workload_id": "wl_nope", "provider_id": pr["id"], "effect": "allow"}
    )
    # A schema-valid body naming an id that does not exist: 404 (the OpenAPI schema cannot know ids).
    assert missing.status_code == 404 and missing.json()["field"] == "workload_id"
    body = {"workload_id": wl["id"], "target_id": tg["id"], "provider_id": pr["id"], "effect": "allow"}
    created = await admin.post("/v1/policies", json=body)
    assert created.status_code == 201
    assert created.json()["max_ttl_seconds"] == 300 and created.json()["id"].startswith("pol_")
    assert (await admin.post("/v1/policies", json={**body, "effect": "deny"})).status_code == 409
    wildcard = await admin.post("/v1/policies", json={"provider_id": pr["id"], "effect": "deny"})
    assert wildcard.status_code == 201 and wildcard.json()["workload_id"] is None
    listed = (await admin.get("/v1/policies", params={"workload_id": wl["id"]})).json()["data"]
    assert [p["id"] for p in listed] == [created.json()["id"]]
    bad = await admin.post("/v1/policies", json={**body, "effect": "maybe"})
    assert bad.status_code == 400 and bad.json()["field"] == "effect"


async def test_target_injection_cannot_carry_header_syntax(admin):
    """Injection names are RFC 9110 tokens and prefixes printable text: nothing that splits a header."""
    for injection, field in (
        ({"type": "header", "name": "X-Key", "prefix": "k\r\nX-Evil: 1\r\n"}, "injection.prefix"),
        ({"type": "bearer", "prefix": "Bearer\x00"}, "injection.prefix"),
        ({"type": "header", "name": "X Key:"}, "injection.name"),
    ):
        body = {"name": "t", "host": "t.example", "injection": injection}
        resp = await admin.post("/v1/targets", json=body)
        assert resp.status_code == 400, injection
        assert (resp.json()["error"], resp.json()["field"]) == ("invalid_request", field)
