"""Several control plane replicas on one PostgreSQL database (real server, see conftest `postgres`)."""

from __future__ import annotations

import asyncio

import asyncpg

from controlplane.appkeys import AUDIT
from controlplane.store.postgres import PostgresStore
from controlplane.store.sql.migrations import MIGRATIONS
from devkit.controlplane_server import new_kek, running_control_plane
from tests.controlplane.conftest import TEST_RATE_LIMIT, client_for, workload_body


async def test_replicas_starting_together_migrate_once(pg_dsn):
    stores = await asyncio.gather(*(PostgresStore.open(pg_dsn) for _ in range(3)))
    try:
        assert {await s.schema_version() for s in stores} == {MIGRATIONS[-1].version}
        conn = await asyncpg.connect(pg_dsn)
        try:
            versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")]
        finally:
            await conn.close()
        assert sorted(versions) == [m.version for m in MIGRATIONS]
    finally:
        for store in stores:
            await store.close()


async def test_two_replicas_share_registrations_and_extend_one_audit_chain(pg_dsn, tmp_path):
    kek = new_kek()
    config = {"db_dsn": pg_dsn, "kek": kek, "rate_limit_per_minute": TEST_RATE_LIMIT}
    async with (
        running_control_plane(tmp_path / "a.db", **config) as a,
        running_control_plane(tmp_path / "b.db", **config) as b,
        client_for(a, a.owner_key) as admin_a,
        client_for(b, b.owner_key) as admin_b,
    ):

        async def register(admin, prefix: str) -> list[str]:
            ids = []
            for i in range(15):
                resp = await admin.post(
                    "/v1/workloads", json=workload_body(f"{prefix}-{i}", prefix, f"sa-{i}")
                )
                assert resp.status_code == 201, resp.text
                ids.append(resp.json()["id"])
            return ids

        async def burst(cp, n: int) -> None:
            await asyncio.gather(
                *(cp.app[AUDIT].record(type="burst", actor="r", outcome="success") for _ in range(n))
            )

        ids_a, ids_b, *_ = await asyncio.gather(
            register(admin_a, "a"), register(admin_b, "b"), *(burst(cp, 150) for cp in (a, b, a, b))
        )
        for admin in (admin_a, admin_b):
            listed = (await admin.get("/v1/workloads", params={"limit": 100})).json()["data"]
            assert {w["id"] for w in listed} == set(ids_a + ids_b)
            # key-owner events of both replicas + 30 workload.created + 600 burst events
            result = (await admin.get("/v1/audit/verify")).json()
            assert result["ok"] is True, result
        conn = await asyncpg.connect(pg_dsn)
        try:
            total = await conn.fetchval("SELECT count(*) FROM audit_events")
            heads = await conn.fetch("SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            stored_head = await conn.fetchval("SELECT value FROM meta WHERE key = 'audit_head'")
        finally:
            await conn.close()
        assert result["checked"] == total >= 630
        assert heads[0]["hash"] == stored_head
