"""Proxy-facing routes, authenticated with the pod's service-account token: routes (ETag),
heartbeats → /v1/proxies, observations → /v1/discovery. Real control plane and cluster issuer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from controlplane.exchange_settings import ExchangeSettings
from tests.controlplane.exchange_support import Env, allow, exchange_env


@pytest.fixture
async def env(tmp_path) -> AsyncIterator[Env]:
    async with exchange_env(tmp_path, ExchangeSettings()) as env:
        yield env


def sa(env: Env, **kwargs) -> dict[str, str]:
    return {"Authorization": f"Bearer {env.token(**kwargs)}"}


async def test_routes_list_every_target_a_policy_decides_but_not_unnamed_ones(env: Env) -> None:
    await allow(env)
    gated = await env.create("/v1/targets", {"name": "gated", "host": "gated.example"})
    denied = await env.create("/v1/targets", {"name": "denied", "host": "denied.example"})
    await env.create("/v1/targets", {"name": "unnamed", "host": "unnamed.example"})
    for target, effect in ((gated, "require_approval"), (denied, "deny")):
        await env.create(
            "/v1/policies",
            {
                "workload_id": env.workload_id,
                "target_id": target["id"],
                "provider_id": env.provider_id,
                "effect": effect,
            },
        )
    resp = await env.http.get("/v1/proxy/routes", headers=sa(env))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["refresh_seconds"] > 0
    assert body["routes"] == [
        {
            "target_id": env.target_id,
            "name": "example-api",
            "host": "api.example",
            "port": 443,
            "scheme": "https",
            "tls": "intercept",
            "audience": "https://api.example",
            "injection": {"type": "bearer", "name": None, "prefix": None},
            "effect": "allow",
            "approval": None,
        },
        {
            "target_id": gated["id"],
            "name": "gated",
            "host": "gated.example",
            "port": 443,
            "scheme": "https",
            "tls": "intercept",
            "audience": gated["audience"],
            "injection": {"type": "bearer", "name": None, "prefix": None},
            "effect": "require_approval",
            "approval": "required",
        },
        {
            "target_id": denied["id"],
            "name": "denied",
            "host": "denied.example",
            "port": 443,
            "scheme": "https",
            "tls": "intercept",
            "audience": denied["audience"],
            "injection": {"type": "bearer", "name": None, "prefix": None},
            "effect": "deny",
            "approval": None,
        },
    ]


async def test_routes_answer_304_until_they_change(env: Env) -> None:
    first = await env.http.get("/v1/proxy/routes", headers=sa(env))
    assert first.json()["routes"] == []
    etag = first.headers["ETag"]
    same = await env.http.get("/v1/proxy/routes", headers={**sa(env), "If-None-Match": etag})
    assert same.status_code == 304 and same.headers["ETag"] == etag
    await allow(env)
    changed = await env.http.get("/v1/proxy/routes", headers={**sa(env), "If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    assert [r["target_id"] for r in changed.json()["routes"]] == [env.target_id]


async def test_wildcard_policy_and_approval_grant_routes(env: Env) -> None:
    other = await env.create(
        "/v1/targets",
        {
            "name": "other",
            "host": "other.example",
            "port": 8443,
            "injection": {"type": "header", "name": "X-Api-Key"},
        },
    )
    await env.create(
        "/v1/policies",
        {"workload_id": env.workload_id, "provider_id": env.provider_id, "effect": "require_approval"},
    )

    async def routes() -> list[tuple[str, int, str | None, str | None]]:
        listed = (await env.http.get("/v1/proxy/routes", headers=sa(env))).json()["routes"]
        return [(r["host"], r["port"], r["injection"]["name"], r["approval"]) for r in listed]

    # Gated targets are governed before anyone asks: the proxy must not pass their traffic through.
    assert await routes() == [
        ("api.example", 443, None, "required"),
        ("other.example", 8443, "X-Api-Key", "required"),
    ]
    pending = await env.exchange(audience=other["audience"])
    assert pending.status_code == 202
    assert await routes() == [
        ("api.example", 443, None, "required"),
        ("other.example", 8443, "X-Api-Key", "required"),
    ]
    await env.admin.post(f"/v1/approvals/{pending.json()['approval_id']}/approve")
    assert await routes() == [
        ("api.example", 443, None, "required"),
        ("other.example", 8443, "X-Api-Key", "approved"),
    ]
    refused = await env.exchange()  # api.example: its approval is denied, it stays listed, fail closed
    await env.admin.post(f"/v1/approvals/{refused.json()['approval_id']}/deny")
    assert (await env.exchange()).json()["error"] == "policy_denied"
    assert await routes() == [
        ("api.example", 443, None, "required"),
        ("other.example", 8443, "X-Api-Key", "approved"),
    ]


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "invalid_subject_token"),
        ({"Authorization": "Bearer not-a-token"}, 401, "invalid_subject_token"),
        ("stranger", 404, "unknown_workload"),
    ],
)
async def test_proxy_routes_refuse_unattested_callers_and_audit_it(env: Env, headers, status, code) -> None:
    if headers == "stranger":
        headers = sa(env, service_account="stranger")
    resp = await env.http.get("/v1/proxy/routes", headers={**headers, "X-Request-Id": "proxy-denied"})
    assert resp.status_code == status and resp.json()["error"] == code
    [event] = await env.audit(correlation_id="proxy-denied")
    assert (event["type"], event["reason"]) == ("proxy.denied", code)


async def test_revoked_workload_gets_no_routes(env: Env) -> None:
    await allow(env)
    await env.admin.patch(f"/v1/workloads/{env.workload_id}", json={"status": "revoked"})
    resp = await env.http.get("/v1/proxy/routes", headers=sa(env))
    assert resp.status_code == 403 and resp.json()["error"] == "workload_revoked"


async def test_heartbeats_build_the_fleet_view(env: Env) -> None:
    for version in ("0.1.0", "0.2.0"):
        resp = await env.http.post(
            "/v1/proxy/heartbeat",
            headers=sa(env, pod_uid="uid-1"),
            json={"pod": "checkout-1", "version": version},
        )
        assert resp.status_code == 204, resp.text
        env.clock.advance(10)
    await env.http.post(
        "/v1/proxy/heartbeat", headers=sa(env), json={"pod": "checkout-2", "version": "0.2.0"}
    )
    fleet = (await env.admin.get("/v1/proxies")).json()
    assert [(p["pod"], p["version"]) for p in fleet["data"]] == [
        ("checkout-1", "0.2.0"),
        ("checkout-2", "0.2.0"),
    ]
    first = fleet["data"][0]
    assert first["workload_id"] == env.workload_id and first["pod_uid"] == "uid-1"
    assert first["last_seen"] > first["first_seen"]


async def test_heartbeat_body_is_validated(env: Env) -> None:
    resp = await env.http.post("/v1/proxy/heartbeat", headers=sa(env), json={"pod": "p"})
    assert resp.status_code == 400 and resp.json()["field"] == "version"


async def test_observations_feed_discovery(env: Env) -> None:
    batch = [
        {"host": "api.example", "port": 443, "count": 3, "governed": True},
        {"host": "pypi.org", "port": 443, "count": 1, "governed": False},
    ]
    for _ in range(2):
        resp = await env.http.post("/v1/proxy/observations", headers=sa(env), json=batch)
        assert resp.status_code == 204, resp.text
    seen = (await env.admin.get("/v1/discovery")).json()["data"]
    assert {(o["host"], o["count"], o["governed"]) for o in seen} == {
        ("api.example", 6, True),
        ("pypi.org", 2, False),
    }
    assert all(o["workload_id"] == env.workload_id for o in seen)
    ungoverned = (await env.admin.get("/v1/discovery", params={"governed": "false"})).json()["data"]
    assert [o["host"] for o in ungoverned] == ["pypi.org"]


async def test_observations_must_be_a_list_of_counts(env: Env) -> None:
    resp = await env.http.post("/v1/proxy/observations", headers=sa(env), json=[{"host": "x", "port": 0}])
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_request"
