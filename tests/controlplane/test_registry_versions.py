"""Registry writes are compare-and-set on a version: no lost update, ETag/If-Match, audited atomically.

Both backends (the `db_config` fixture): a real SQLite file and a real PostgreSQL server.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import asyncpg
import pytest

from controlplane.store import open_store
from controlplane.store.base import VersionConflict
from devkit.controlplane_server import running_control_plane
from tests.controlplane.conftest import TEST_RATE_LIMIT, client_for


def _running(db_config: dict[str, Any]):
    return running_control_plane(rate_limit_per_minute=TEST_RATE_LIMIT, **db_config)


def _location(db_config: dict[str, Any]) -> Any:
    return db_config.get("db_dsn") or db_config["db_path"]


async def _targets(admin, n: int) -> list[str]:
    ids = []
    for i in range(n):
        resp = await admin.post("/v1/targets", json={"name": f"t{i}", "host": f"t{i}.example"})
        assert resp.status_code == 201, resp.text
        assert resp.headers["ETag"] == '"1"'
        ids.append(resp.json()["id"])
    return ids


async def test_concurrent_patches_of_different_fields_are_both_stored(db_config):
    async with _running(db_config) as cp, client_for(cp, cp.owner_key) as admin:
        ids = await _targets(admin, 20)

        async def patch(id: str, body: dict[str, Any]) -> int:
            return (await admin.patch(f"/v1/targets/{id}", json=body)).status_code

        statuses = await asyncio.gather(
            *(patch(id, {"port": 8443}) for id in ids),
            *(patch(id, {"host": f"new-{i}.example"}) for i, id in enumerate(ids)),
        )
        assert statuses == [200] * 40
        for i, id in enumerate(ids):
            resp = await admin.get(f"/v1/targets/{id}")
            assert (resp.json()["port"], resp.json()["host"]) == (8443, f"new-{i}.example")
            assert resp.headers["ETag"] == '"3"'
            events = (await admin.get("/v1/audit", params={"type": "target.updated", "limit": 100})).json()
            assert sorted(e["extra"]["fields"] for e in events["events"] if e["extra"]["id"] == id) == [
                ["host"],
                ["port"],
            ]


async def test_if_match_applies_a_patch_only_to_that_version(db_config):
    async with _running(db_config) as cp, client_for(cp, cp.owner_key) as admin:
        [id] = await _targets(admin, 1)
        url = f"/v1/targets/{id}"
        first = await admin.patch(url, json={"port": 8443}, headers={"If-Match": '"1"'})
        assert first.status_code == 200 and first.headers["ETag"] == '"2"'
        stale = await admin.patch(url, json={"port": 9443}, headers={"If-Match": '"1"'})
        assert stale.status_code == 412
        assert stale.json() == {
            "error": "precondition_failed",
            "message": stale.json()["message"],
            "current_etag": '"2"',
        }
        assert stale.headers["ETag"] == '"2"'
        assert (await admin.get(url)).json()["port"] == 8443
        listed = await admin.patch(url, json={"port": 9443}, headers={"If-Match": '"7", "2"'})
        assert listed.status_code == 200 and listed.headers["ETag"] == '"3"'
        anything = await admin.patch(url, json={"port": 443}, headers={"If-Match": "*"})
        assert anything.status_code == 200 and anything.headers["ETag"] == '"4"'
        missing = await admin.patch("/v1/targets/tg_missing", json={"port": 1}, headers={"If-Match": "*"})
        assert missing.status_code == 404
        refused = (await admin.get("/v1/audit", params={"type": "target.updated"})).json()["events"]
        assert len(refused) == 3  # the 412 changed nothing and audited no update


async def test_a_write_with_a_stale_version_raises_version_conflict(db_config):
    async with _running(db_config) as cp, client_for(cp, cp.owner_key) as admin:
        [id] = await _targets(admin, 1)
        store = await open_store(_location(db_config))  # another replica's view of the database
        try:
            updated = await store.registry.update(
                "targets", id, {"port": 1}, now="2026-01-01T00:00:00Z", version=1
            )
            assert updated is not None and updated.version == 2
            with pytest.raises(VersionConflict) as info:
                await store.registry.update("targets", id, {"port": 2}, now="2026-01-01T00:00:00Z", version=1)
            assert info.value.current == 2
            assert (await store.registry.get("targets", id))["port"] == 1
        finally:
            await store.close()
        assert (await admin.get(f"/v1/targets/{id}")).headers["ETag"] == '"2"'


async def _refuse_audit_rows(db_config: dict[str, Any]) -> None:
    """Make every audit insert fail (a trigger), as a full disk or a broken audit table would."""
    if "db_dsn" in db_config:
        conn = await asyncpg.connect(db_config["db_dsn"])
        try:
            await conn.execute(
                "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$ "
                "LANGUAGE plpgsql; CREATE TRIGGER refuse BEFORE INSERT ON audit_events "
                "FOR EACH ROW EXECUTE FUNCTION refuse()"
            )
        finally:
            await conn.close()
        return
    conn = sqlite3.connect(db_config["db_path"])
    try:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        conn.commit()
    finally:
        conn.close()


async def test_a_change_whose_audit_row_cannot_be_written_is_not_stored(db_config):
    async with _running(db_config) as cp, client_for(cp, cp.owner_key) as admin:
        [id] = await _targets(admin, 1)
        await _refuse_audit_rows(db_config)
        patched = await admin.patch(f"/v1/targets/{id}", json={"port": 8443})
        assert patched.status_code == 503 and patched.json()["error"] == "store_unavailable"
        created = await admin.post("/v1/targets", json={"name": "late", "host": "late.example"})
        assert created.status_code == 503
        deleted = await admin.delete(f"/v1/targets/{id}")
        assert deleted.status_code == 503
        resp = await admin.get(f"/v1/targets/{id}")
        assert resp.json()["port"] == 443 and resp.headers["ETag"] == '"1"'
        assert [t["name"] for t in (await admin.get("/v1/targets")).json()["data"]] == ["t0"]
