"""Token exchange on PostgreSQL: static and signed-JWT credentials, approvals, fleet, discovery.

Real PostgreSQL server (conftest `postgres`), real control plane on port 0, real cluster issuer.
"""

from __future__ import annotations

import jwt

from devkit.controlplane_server import LOOPBACK, running_control_plane
from devkit.issuer import ClusterIssuer
from tests.controlplane.conftest import TEST_RATE_LIMIT, client_for

JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
STATIC = "static-upstream-key-0123456789"


async def test_token_exchange_and_proxy_routes_on_postgres(pg_dsn, tmp_path, clock):
    async with (
        ClusterIssuer(clock=clock.time) as issuer,
        running_control_plane(
            tmp_path / "unused.db",
            db_dsn=pg_dsn,
            clock=clock,
            rate_limit_per_minute=TEST_RATE_LIMIT,
            outbound=LOOPBACK,
        ) as cp,
        client_for(cp, cp.owner_key) as admin,
        client_for(cp, None) as http,
    ):

        async def create(path: str, body: dict) -> dict:
            resp = await admin.post(path, json=body)
            assert resp.status_code == 201, resp.text
            return resp.json()

        await create("/v1/clusters", {"name": "prod", "issuer": issuer.issuer})
        attestation = {"type": "kubernetes-service-account", "namespace": "shop", "service_account": "app"}
        workload = await create(
            "/v1/workloads", {"name": "app", "attestation": {**attestation, "cluster": "prod"}}
        )
        static_target = await create(
            "/v1/targets", {"name": "a", "host": "a.example", "audience": "https://a"}
        )
        jwt_target = await create("/v1/targets", {"name": "b", "host": "b.example", "audience": "https://b"})
        static = await create(
            "/v1/credential-providers", {"name": "s", "type": "static", "config": {"value": STATIC}}
        )
        signed = await create("/v1/credential-providers", {"name": "j", "type": "signed-jwt", "config": {}})
        scope = {"workload_id": workload["id"], "max_ttl_seconds": 300}
        await create(
            "/v1/policies",
            {
                **scope,
                "target_id": static_target["id"],
                "provider_id": static["id"],
                "effect": "require_approval",
            },
        )
        await create(
            "/v1/policies",
            {**scope, "target_id": jwt_target["id"], "provider_id": signed["id"], "effect": "allow"},
        )
        token = issuer.mint(namespace="shop", service_account="app", audience="sesame")

        async def exchange(audience: str):
            body = {"subject_token": token, "subject_token_type": JWT_TYPE, "audience": audience}
            return await http.post("/v1/token-exchange", json=body)

        pending = await exchange("https://a")
        assert pending.status_code == 202, pending.text
        approval_id = pending.json()["approval_id"]
        assert (await exchange("https://a")).json()["approval_id"] == approval_id
        approved = await admin.post(f"/v1/approvals/{approval_id}/approve", json={"window_seconds": 600})
        assert approved.status_code == 200 and approved.json()["status"] == "approved"
        assert (await admin.post(f"/v1/approvals/{approval_id}/deny")).status_code == 409
        granted = await exchange("https://a")
        assert granted.status_code == 200 and granted.json()["access_token"] == STATIC

        issued = await exchange("https://b")
        assert issued.status_code == 200, issued.text
        keys = jwt.PyJWKSet.from_dict((await http.get("/v1/jwks")).json())
        kid = jwt.get_unverified_header(issued.json()["access_token"])["kid"]
        claims = jwt.decode(
            issued.json()["access_token"],
            keys[kid].key,
            algorithms=["ES256"],
            audience="https://b",
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
        )
        assert claims["sub"] == "sesame://prod/ns/shop/sa/app"

        sa = {"Authorization": f"Bearer {token}"}
        routes = (await http.get("/v1/proxy/routes", headers=sa)).json()["routes"]
        assert {r["audience"] for r in routes} == {"https://a", "https://b"}
        for version in ("0.1.0", "0.2.0"):
            beat = await http.post(
                "/v1/proxy/heartbeat", headers=sa, json={"pod": "app-1", "version": version}
            )
            assert beat.status_code == 204, beat.text
        fleet = (await admin.get("/v1/proxies")).json()["data"]
        assert [(p["pod"], p["version"]) for p in fleet] == [("app-1", "0.2.0")]
        assert (await admin.get("/v1/audit/verify")).json()["ok"] is True


async def test_observations_accumulate_on_postgres(pg_dsn, tmp_path, clock):
    async with (
        ClusterIssuer(clock=clock.time) as issuer,
        running_control_plane(tmp_path / "unused.db", db_dsn=pg_dsn, clock=clock, outbound=LOOPBACK) as cp,
        client_for(cp, cp.owner_key) as admin,
        client_for(cp, None) as http,
    ):
        await admin.post("/v1/clusters", json={"name": "prod", "issuer": issuer.issuer})
        attestation = {"type": "kubernetes-service-account", "namespace": "shop", "service_account": "app"}
        await admin.post("/v1/workloads", json={"name": "app", "attestation": attestation})
        token = issuer.mint(namespace="shop", service_account="app", audience="sesame")
        sa = {"Authorization": f"Bearer {token}"}
        batch = [{"host": "a.example", "port": 443, "count": 2, "governed": True}]
        for _ in range(2):
            assert (await http.post("/v1/proxy/observations", headers=sa, json=batch)).status_code == 204
        seen = (await admin.get("/v1/discovery")).json()["data"]
        assert [(o["host"], o["count"], o["governed"]) for o in seen] == [("a.example", 4, True)]
