"""The store's behaviours on both backends: a real SQLite file and a real PostgreSQL server.

Raw SQL against the database (tampering, reading sealed columns) goes around the control plane
on purpose: these tests check what is actually stored.
"""

from __future__ import annotations

import asyncio
import csv
import io
import sqlite3
from typing import Any

import asyncpg
import pytest

from controlplane.appkeys import AUDIT
from controlplane.config import Config
from controlplane.errors import StartupError
from controlplane.store import new_store
from controlplane.store.postgres import PostgresStore
from controlplane.store.postgres.dialect import placeholders
from devkit.controlplane_server import running_control_plane
from tests.controlplane.conftest import TEST_RATE_LIMIT, client_for, new_key, workload_body

SECRET = "sk_live_BACKEND-secret-value-0123456789"


async def raw_sql(config: Config, sql: str, *params: Any) -> list[tuple]:
    """Run one statement straight against the backend's database (`?` placeholders)."""
    if config.db_dsn:
        conn = await asyncpg.connect(config.db_dsn)
        try:
            return [tuple(r) for r in await conn.fetch(placeholders(sql), *params)]
        finally:
            await conn.close()
    with sqlite3.connect(config.db_path) as db:
        return db.execute(sql, params).fetchall()


def _running(db_config: dict[str, Any], **kw: Any):
    return running_control_plane(rate_limit_per_minute=TEST_RATE_LIMIT, **db_config, **kw)


async def test_registry_crud_and_pagination_walk_every_row_once(db_config):
    async with _running(db_config) as cp, client_for(cp, cp.owner_key) as admin:
        created = []
        for i in range(23):
            resp = await admin.post("/v1/workloads", json=workload_body(f"wl-{i}", "ns", f"sa-{i}"))
            assert resp.status_code == 201, resp.text
            created.append(resp.json()["id"])
        seen, cursor = [], None
        for _ in range(10):
            params = {"limit": 5, **({"cursor": cursor} if cursor else {})}
            body = (await admin.get("/v1/workloads", params=params)).json()
            seen += [w["id"] for w in body["data"]]
            if not (cursor := body["next_cursor"]):
                break
        assert seen == created

        dup_name = await admin.post("/v1/workloads", json=workload_body("wl-0", "other", "x"))
        assert dup_name.status_code == 409 and "name" in dup_name.json()["message"]
        dup_identity = await admin.post("/v1/workloads", json=workload_body("fresh", "ns", "sa-1"))
        assert dup_identity.status_code == 409 and "attestation" in dup_identity.json()["message"]

        wid = created[0]
        patched = await admin.patch(f"/v1/workloads/{wid}", json={"status": "revoked"})
        assert patched.status_code == 200 and patched.json()["status"] == "revoked"
        assert (await admin.get(f"/v1/workloads/{wid}")).json()["status"] == "revoked"
        assert (await admin.delete(f"/v1/workloads/{wid}")).status_code == 204
        assert (await admin.get(f"/v1/workloads/{wid}")).status_code == 404
        assert (await admin.delete(f"/v1/workloads/{wid}")).status_code == 404


async def test_deleted_api_key_is_rejected_at_once(db_config):
    async with _running(db_config) as cp, client_for(cp, cp.owner_key) as admin:
        key = await new_key(admin, "viewer", name="short-lived")
        async with client_for(cp, key) as viewer:
            assert (await viewer.get("/v1/workloads")).status_code == 200
            key_id = next(
                k["id"]
                for k in (await admin.get("/v1/api-keys")).json()["data"]
                if k["name"] == "short-lived"
            )
            assert (await admin.delete(f"/v1/api-keys/{key_id}")).status_code == 204
            denied = await viewer.get("/v1/workloads")
            assert denied.status_code == 401 and denied.json()["error"] == "unauthorized"


async def test_audit_chain_verifies_and_reports_an_edited_or_deleted_row(db_config):
    async with _running(db_config) as cp, client_for(cp, cp.owner_key) as admin:
        audit = cp.app[AUDIT]
        events = await asyncio.gather(
            *(audit.record(type="t", actor=f"a{i}", outcome="success") for i in range(40))
        )
        ok = (await admin.get("/v1/audit/verify")).json()
        assert ok["ok"] is True and ok["checked"] >= 40
        order = [r[0] for r in await raw_sql(cp.config, "SELECT id FROM audit_events ORDER BY seq")]
        victim = order[len(order) // 2]
        await raw_sql(cp.config, "UPDATE audit_events SET actor = ? WHERE id = ?", "mallory", victim)
        result = (await admin.get("/v1/audit/verify")).json()
        assert result["ok"] is False and result["first_bad_id"] == victim
        await raw_sql(cp.config, "DELETE FROM audit_events WHERE id = ?", victim)
        after = order[order.index(victim) + 1]
        result = (await admin.get("/v1/audit/verify")).json()
        assert result["ok"] is False and result["first_bad_id"] == after
        assert {e["id"] for e in events} <= set(order)


async def test_provider_secret_is_sealed_in_the_database(db_config):
    async with _running(db_config) as cp, client_for(cp, cp.owner_key) as admin:
        resp = await admin.post(
            "/v1/credential-providers", json={"name": "stripe", "type": "static", "config": {"value": SECRET}}
        )
        assert resp.status_code == 201, resp.text
        pid = resp.json()["id"]
        [(secret, data)] = await raw_sql(
            cp.config, "SELECT secret, data FROM credential_providers WHERE id = ?", pid
        )
        assert isinstance(secret, bytes) and len(secret) > len(SECRET)
        assert SECRET.encode() not in secret and SECRET not in data
        dumps = await raw_sql(cp.config, "SELECT id, type, actor, reason, extra FROM audit_events")
        assert SECRET not in repr(dumps)


async def test_export_sends_rows_sharing_one_timestamp_exactly_once(db_config, clock):
    """2,345 events in one millisecond (fake clock) span several internal keyset pages (1,000 rows)
    and, with limit=1000, three exports chained by X-Next-Cursor; every id arrives once."""
    async with _running(db_config, clock=clock) as cp, client_for(cp, cp.owner_key) as admin:
        audit = cp.app[AUDIT]
        for start in range(0, 2345, 500):
            await asyncio.gather(
                *(
                    audit.record(type="bulk", actor="a", outcome="success")
                    for _ in range(start, min(start + 500, 2345))
                )
            )
        stored = {r[0] for r in await raw_sql(cp.config, "SELECT id FROM audit_events WHERE type = 'bulk'")}
        assert len(stored) == 2345
        assert len({r[0] for r in await raw_sql(cp.config, "SELECT DISTINCT ts FROM audit_events")}) == 1

        whole = (await admin.get("/v1/audit/export", params={"type": "bulk"})).json()
        assert "X-Next-Cursor" not in (await admin.get("/v1/audit/export", params={"type": "bulk"})).headers
        assert len(whole) == 2345 and {e["id"] for e in whole} == stored

        ids: list[str] = []
        cursor = None
        for _ in range(10):
            params = {
                "type": "bulk",
                "limit": 1000,
                "format": "csv",
                **({"cursor": cursor} if cursor else {}),
            }
            resp = await admin.get("/v1/audit/export", params=params)
            assert resp.status_code == 200
            ids += [row["id"] for row in csv.DictReader(io.StringIO(resp.text))]
            if not (cursor := resp.headers.get("X-Next-Cursor")):
                break
        assert len(ids) == 2345 and set(ids) == stored
        bad = await admin.get("/v1/audit/export", params={"cursor": "not-a-cursor"})
        assert bad.status_code == 400 and bad.json()["field"] == "cursor"


async def test_postgres_dsn_selects_postgres_and_its_password_is_never_shown(tmp_path):
    dsn = f"postgresql://sesame:hunter2-pw@/sesame?host={tmp_path}&port=1"
    config = Config.build({"db": None}, {"SESAME_DB": dsn})
    assert config.db_dsn == dsn and config.db_location == dsn
    assert "hunter2-pw" not in repr(config) and "hunter2-pw" not in config.db_label
    assert Config.build({"db": str(tmp_path / "x.db")}, {"SESAME_DB": dsn}).db_dsn is None  # flag wins
    store = new_store(dsn)
    assert isinstance(store, PostgresStore)
    with pytest.raises(StartupError) as err:
        await store.start()  # no server on that socket
    assert "hunter2-pw" not in str(err.value) and "sesame:***@" in str(err.value)
