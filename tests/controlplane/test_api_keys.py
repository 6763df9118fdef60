"""Admin API keys (seed 004): shown once, stored hashed, revoked at once, role-gated."""

from __future__ import annotations

import sqlite3

from tests.controlplane.conftest import client_for, new_key, workload_body


async def test_create_returns_the_key_once_with_prefix(admin):
    resp = await admin.post("/v1/api-keys", json={"name": "CI pipeline", "role": "admin"})
    assert resp.status_code == 201
    body = resp.json()
    key = body["key"]
    assert key.startswith("ses_") and len(key) >= 4 + 32
    assert body["prefix"] == key[:12]
    assert body["id"].startswith("key_") and body["role"] == "admin" and body["last_used_at"] is None

    listed = (await admin.get("/v1/api-keys")).json()["data"]
    mine = next(k for k in listed if k["id"] == body["id"])
    assert set(mine) == {"id", "name", "role", "prefix", "created_at", "last_used_at"}
    assert key not in str(listed)


async def test_keys_are_stored_only_as_hashes(admin, control_plane):
    key = await new_key(admin, "viewer")
    async with client_for(control_plane, key) as viewer:
        assert (await viewer.get("/v1/workloads")).status_code == 200
    raw = control_plane.config.db_path.read_bytes()
    for suffix in ("-wal", ""):
        path = control_plane.config.db_path.with_name(control_plane.config.db_path.name + suffix)
        data = path.read_bytes() if path.exists() else b""
        assert key.encode() not in data and key[12:].encode() not in data
    assert raw  # the database exists and was read


async def test_deleted_key_is_rejected_at_once(admin, control_plane):
    created = (await admin.post("/v1/api-keys", json={"name": "tmp", "role": "admin"})).json()
    async with client_for(control_plane, created["key"]) as other:
        assert (await other.get("/v1/workloads")).status_code == 200
        assert (await admin.delete(f"/v1/api-keys/{created['id']}")).status_code == 204
        resp = await other.get("/v1/workloads")
        assert resp.status_code == 401
        assert resp.json()["error"] == "unauthorized"
    assert (await admin.delete(f"/v1/api-keys/{created['id']}")).status_code == 404


async def test_missing_malformed_and_unknown_keys_are_401(control_plane):
    for key in (None, "nope", "ses_" + "A" * 40):
        async with client_for(control_plane, key) as c:
            resp = await c.get("/v1/workloads")
            assert resp.status_code == 401 and resp.json()["error"] == "unauthorized"


async def test_roles_gate_routes_with_403(admin, control_plane):
    viewer_key, admin_key = await new_key(admin, "viewer"), await new_key(admin, "admin")
    async with client_for(control_plane, viewer_key) as viewer, client_for(control_plane, admin_key) as adm:
        assert (await viewer.get("/v1/workloads")).status_code == 200
        denied = await viewer.post("/v1/workloads", json=workload_body())
        assert denied.status_code == 403 and denied.json()["error"] == "forbidden"
        assert (await adm.post("/v1/workloads", json=workload_body())).status_code == 201
        assert (await adm.post("/v1/api-keys", json={"name": "x", "role": "owner"})).status_code == 403
        assert (await adm.post("/v1/audit/prune", json={"days": 30})).status_code == 403
        assert (await viewer.get("/v1/audit")).status_code == 200


async def test_permission_catalog_lists_every_route_permission(admin, control_plane):
    from controlplane.appkeys import ROUTES

    body = (await admin.get("/v1/permissions")).json()
    names = {p["name"] for p in body["data"]}
    declared = {r.permission.name for r in control_plane.app[ROUTES] if r.permission is not None}
    assert names == declared
    assert body["roles"] == ["viewer", "admin", "owner"]
    prune = next(p for p in body["data"] if p["name"] == "audit.prune")
    assert prune["roles"] == ["owner"]


async def test_last_used_at_is_recorded(admin, control_plane):
    key = await new_key(admin, "viewer", name="used")
    async with client_for(control_plane, key) as c:
        await c.get("/v1/workloads")
    with sqlite3.connect(control_plane.config.db_path) as db:
        (last_used,) = db.execute("SELECT last_used_at FROM api_keys WHERE name = 'used'").fetchone()
    assert last_used is not None


async def test_bootstrap_key_becomes_owner_only_when_no_owner_exists(tmp_path):
    from devkit.controlplane_server import running_control_plane

    first, second = "ses_" + "b" * 40, "ses_" + "c" * 40
    async with running_control_plane(tmp_path / "cp.db", bootstrap_api_key=first) as cp:
        async with client_for(cp, first) as c:
            keys = (await c.get("/v1/api-keys")).json()["data"]
            assert [k["role"] for k in keys if k["name"] == "bootstrap"] == ["owner"]
    async with running_control_plane(tmp_path / "cp.db", bootstrap_api_key=second) as cp:
        async with client_for(cp, second) as c:
            assert (await c.get("/v1/workloads")).status_code == 401


async def test_replicas_bootstrapping_the_same_key_at_once_register_it_once(tmp_path):
    """Two replicas both see no owner, then both insert the key: the second gives way."""
    from controlplane.api_keys import ApiKeys
    from controlplane.clock import SystemClock
    from controlplane.store import open_store

    key = "ses_" + "r" * 40
    first, second = await open_store(tmp_path / "cp.db"), await open_store(tmp_path / "cp.db")
    try:
        replicas = [ApiKeys(store.api_keys, SystemClock()) for store in (first, second)]
        assert await replicas[0].ensure_bootstrap(key) is True

        async def no_owner_yet(role: str) -> int:  # the second replica read before the first wrote
            return 0

        second.api_keys.count_role = no_owner_yet
        assert await replicas[1].ensure_bootstrap(key) is False
        rows = await first.db.fetchall("SELECT role FROM api_keys")
        assert [r["role"] for r in rows] == ["owner"]
        assert (await replicas[1].authenticate(key)).role == "owner"
    finally:
        await first.close()
        await second.close()
