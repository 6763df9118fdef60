"""/v1/workloads matches seed 000: shapes, pagination, conflicts, literal strings."""

from __future__ import annotations

import sqlite3

from controlplane.appkeys import STORE
from tests.controlplane.conftest import workload_body


async def test_create_returns_seed_shape_and_get_returns_registration(admin):
    resp = await admin.post("/v1/workloads", json=workload_body())
    assert resp.status_code == 201
    created = resp.json()
    assert set(created) == {"id", "name", "status"}
    assert created["id"].startswith("wl_") and created["status"] == "active"

    got = (await admin.get(f"/v1/workloads/{created['id']}")).json()
    assert got["attestation_type"] == "kubernetes-service-account"
    assert (got["namespace"], got["service_account"], got["name"]) == (
        "production",
        "inventory-svc",
        "inventory-service",
    )
    assert got["created_at"].endswith("Z")


async def test_list_has_data_and_next_cursor(admin):
    await admin.post("/v1/workloads", json=workload_body())
    body = (await admin.get("/v1/workloads")).json()
    assert set(body) == {"data", "next_cursor"}
    assert body["next_cursor"] is None
    assert [w["name"] for w in body["data"]] == ["inventory-service"]


async def _seed_workloads(store, count: int) -> None:
    """`count` active workloads written straight to the store (no audit events, fast)."""
    for i in range(count):
        attestation = {"type": "kubernetes-service-account", "namespace": "ns", "service_account": f"sa{i}"}
        await store.registry.create(
            "workloads", {"name": f"w{i}", "status": "active", "attestation": attestation}, now="t"
        )


async def test_pagination_walks_every_row_exactly_once_even_with_concurrent_inserts(admin, control_plane):
    store = control_plane.app[STORE]
    await _seed_workloads(store, 53)
    seen: list[str] = []
    cursor = None
    for page_no in range(100):  # bounded walk
        params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        body = (await admin.get("/v1/workloads", params=params)).json()
        assert len(body["data"]) <= 7
        seen.extend(w["id"] for w in body["data"])
        if page_no == 2:  # rows added mid-walk appear once, at the end
            await admin.post("/v1/workloads", json=workload_body("late", sa="late"))
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 54
    all_ids = {w["id"] for w in (await store.registry.list("workloads", limit=1000)).rows}
    assert set(seen) == all_ids


async def test_default_limit_is_20(admin, control_plane):
    store = control_plane.app[STORE]
    await _seed_workloads(store, 25)
    body = (await admin.get("/v1/workloads")).json()
    assert len(body["data"]) == 20 and body["next_cursor"]


async def test_bad_cursor_and_limit_are_invalid_request(admin):
    for params, field, code in (
        ({"cursor": "not-a-cursor!"}, "cursor", "invalid_cursor"),
        ({"cursor": "eyJ4IjoxfQ"}, "cursor", "invalid_cursor"),
        ({"limit": "0"}, "limit", "invalid_request"),
        ({"limit": "101"}, "limit", "invalid_request"),
        ({"limit": "ten"}, "limit", "invalid_request"),
        ({"bogus": "1"}, "bogus", "invalid_request"),
    ):
        resp = await admin.get("/v1/workloads", params=params)
        assert resp.status_code == 400, params
        assert resp.json()["error"] == code
        assert resp.json()["field"] == field


async def test_duplicate_name_or_identity_is_conflict(admin):
    assert (await admin.post("/v1/workloads", json=workload_body("a", sa="one"))).status_code == 201
    dup_name = await admin.post("/v1/workloads", json=workload_body("a", sa="two"))
    dup_identity = await admin.post("/v1/workloads", json=workload_body("b", sa="one"))
    for resp in (dup_name, dup_identity):
        assert resp.status_code == 409
        assert resp.json()["error"] == "conflict"


async def test_missing_workload_is_not_found(admin):
    for method in ("GET", "PATCH", "DELETE"):
        resp = await admin.request(method, "/v1/workloads/wl_nope", json={} if method == "PATCH" else None)
        assert resp.status_code == 404
        assert resp.json()["error"] == "not_found"


async def test_patch_revokes_and_delete_removes(admin):
    wl = (await admin.post("/v1/workloads", json=workload_body())).json()
    patched = await admin.patch(f"/v1/workloads/{wl['id']}", json={"status": "revoked"})
    assert patched.status_code == 200 and patched.json()["status"] == "revoked"
    assert (await admin.patch(f"/v1/workloads/{wl['id']}", json={"status": "gone"})).status_code == 400
    types = [
        e["type"] for e in (await admin.get("/v1/audit", params={"workload_id": wl["id"]})).json()["events"]
    ]
    assert types == ["workload.revoked", "workload.created"]
    assert (await admin.delete(f"/v1/workloads/{wl['id']}")).status_code == 204
    assert (await admin.get(f"/v1/workloads/{wl['id']}")).status_code == 404


async def test_quotes_and_sql_are_stored_literally(admin, control_plane):
    nasty = 'Robert\'); DROP TABLE workloads;-- "quoted" %_ \\ ünïcode'
    resp = await admin.post("/v1/workloads", json=workload_body(nasty))
    assert resp.status_code == 201
    got = (await admin.get(f"/v1/workloads/{resp.json()['id']}")).json()
    assert got["name"] == nasty
    with sqlite3.connect(control_plane.config.db_path) as db:
        assert db.execute("SELECT count(*) FROM workloads WHERE name = ?", (nasty,)).fetchone()[0] == 1
    filtered = await admin.get("/v1/workloads", params={"namespace": "x' OR '1'='1"})
    assert filtered.status_code == 200 and filtered.json()["data"] == []
