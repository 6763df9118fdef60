"""Audit log: every mutation and denial is an event; filters, cursor, export, prune, hash chain."""

from __future__ import annotations

import asyncio
import csv
import io
import sqlite3

from controlplane.api.audit import NEXT_CURSOR_HEADER
from controlplane.appkeys import AUDIT
from devkit.controlplane_server import running_control_plane
from tests.controlplane.conftest import TEST_RATE_LIMIT, client_for, new_key, workload_body


async def test_mutations_are_audited_with_request_id_as_correlation_id(admin):
    resp = await admin.post("/v1/workloads", json=workload_body(), headers={"X-Request-Id": "req-123"})
    assert resp.headers["X-Request-Id"] == "req-123"
    wl = resp.json()
    events = (await admin.get("/v1/audit", params={"workload_id": wl["id"]})).json()["events"]
    assert [e["type"] for e in events] == ["workload.created"]
    event = events[0]
    assert event["id"].startswith("evt_") and event["outcome"] == "success"
    assert event["correlation_id"] == "req-123" and event["actor"].startswith("api_key:key_")
    assert event["timestamp"].endswith("Z")


async def test_generated_request_id_is_echoed(admin):
    resp = await admin.get("/healthz")
    assert len(resp.headers["X-Request-Id"]) >= 16
    bad = await admin.get("/healthz", headers={"X-Request-Id": "bad id with spaces"})
    assert bad.headers["X-Request-Id"] != "bad id with spaces"


async def test_denials_are_audited(admin, control_plane):
    viewer = await new_key(admin, "viewer")
    async with client_for(control_plane, viewer) as v, client_for(control_plane, "ses_" + "x" * 40) as bad:
        await v.post("/v1/workloads", json=workload_body())
        await bad.get("/v1/workloads")
    events = (await admin.get("/v1/audit", params={"type": "auth.denied"})).json()["events"]
    assert {e["reason"] for e in events} == {"forbidden", "unauthorized"}
    assert all(e["outcome"] == "denied" for e in events)


async def test_filters_and_cursor_walk_newest_first(admin, control_plane, clock):
    audit = control_plane.app[AUDIT]
    for i in range(30):
        await audit.record(
            type="token.issued",
            actor="wl",
            outcome="success",
            workload_id=f"wl_{i % 3}",
            target_service="stripe",
            audience="https://api.stripe.com",
            ttl_seconds=300,
        )
        clock.advance(60)
    seen = []
    cursor = None
    for _ in range(20):
        params = {"workload_id": "wl_1", "limit": 3, **({"cursor": cursor} if cursor else {})}
        body = (await admin.get("/v1/audit", params=params)).json()
        seen.extend(body["events"])
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 10 and len({e["id"] for e in seen}) == 10
    assert all(e["workload_id"] == "wl_1" for e in seen)
    stamps = [e["timestamp"] for e in seen]
    assert stamps == sorted(stamps, reverse=True)

    since = seen[4]["timestamp"]
    recent = (await admin.get("/v1/audit", params={"workload_id": "wl_1", "since": since})).json()["events"]
    assert [e["id"] for e in recent] == [e["id"] for e in seen[:5]]
    until = (await admin.get("/v1/audit", params={"until": since, "target": "stripe", "limit": 100})).json()
    assert all(e["timestamp"] < since for e in until["events"])
    assert (await admin.get("/v1/audit", params={"since": "yesterday"})).json()["field"] == "since"


async def test_concurrent_records_are_all_committed_and_chained(admin, control_plane):
    audit = control_plane.app[AUDIT]
    events = await asyncio.gather(
        *(audit.record(type="t.c", actor="a", outcome="success", reason=str(i)) for i in range(200))
    )
    assert len({e["id"] for e in events}) == 200
    with sqlite3.connect(control_plane.config.db_path) as db:
        assert db.execute("SELECT count(*) FROM audit_events WHERE type = 't.c'").fetchone()[0] == 200
    assert (await admin.get("/v1/audit/verify")).json() == {"ok": True, "checked": 200, "first_bad_id": None}


async def test_an_unstorable_string_fails_neither_its_event_nor_its_batch(admin, control_plane):
    """A lone surrogate is not valid UTF-8; it is stored escaped instead of failing the batch."""
    audit = control_plane.app[AUDIT]
    events = await asyncio.gather(
        audit.record(type="t.u", actor="a", outcome="denied", audience="\udfff"),
        *(audit.record(type="t.u", actor="a", outcome="success", reason=str(i)) for i in range(20)),
    )
    assert events[0]["audience"] == "\\udfff"
    listed = (await admin.get("/v1/audit", params={"type": "t.u", "limit": 100})).json()["events"]
    assert len(listed) == 21 and {e["audience"] for e in listed} == {"\\udfff", None}
    assert (await admin.get("/v1/audit/verify")).json()["ok"] is True


async def test_editing_a_row_in_the_database_file_is_detected(admin, control_plane):
    for i in range(5):
        await admin.post("/v1/workloads", json=workload_body(f"w{i}", sa=f"sa{i}"))
    assert (await admin.get("/v1/audit/verify")).json()["ok"] is True
    events = (await admin.get("/v1/audit", params={"limit": 100})).json()["events"]
    victim = events[2]
    with sqlite3.connect(control_plane.config.db_path) as db:
        db.execute("UPDATE audit_events SET actor = 'someone-else' WHERE id = ?", (victim["id"],))
    result = (await admin.get("/v1/audit/verify")).json()
    assert result["ok"] is False and result["first_bad_id"] == victim["id"]


async def test_deleting_a_row_or_the_newest_rows_is_detected(admin, control_plane):
    for i in range(4):
        await admin.post("/v1/workloads", json=workload_body(f"w{i}", sa=f"sa{i}"))
    events = (await admin.get("/v1/audit", params={"limit": 100})).json()["events"]
    with sqlite3.connect(control_plane.config.db_path) as db:
        db.execute("DELETE FROM audit_events WHERE id = ?", (events[0]["id"],))  # newest
    result = (await admin.get("/v1/audit/verify")).json()
    assert result["ok"] is False
    with sqlite3.connect(control_plane.config.db_path) as db:
        db.execute("DELETE FROM audit_events WHERE id = ?", (events[2]["id"],))  # middle
    result = (await admin.get("/v1/audit/verify")).json()
    assert result == {"ok": False, "checked": 1, "first_bad_id": events[1]["id"]}


async def test_export_stops_at_the_configured_cap_and_continues_with_the_cursor(tmp_path, clock):
    """The 50k cap, scaled down to 5 rows: an export (with or without a larger `limit`) stops at
    the cap and names the continuation; following the cursors yields every row exactly once."""
    async with running_control_plane(
        tmp_path / "cap.db", clock=clock, rate_limit_per_minute=TEST_RATE_LIMIT, audit_export_max_rows=5
    ) as cp, client_for(cp, cp.owner_key) as admin:
        for i in range(12):
            await cp.app[AUDIT].record(type="t.cap", actor="test", outcome="success", extra={"n": i})
        seen: list[int] = []
        params: dict[str, object] = {"type": "t.cap", "limit": 50_000}
        for _ in range(10):  # bounded: 12 rows at 5 per export need 3
            resp = await admin.get("/v1/audit/export", params=params)
            assert resp.status_code == 200, resp.text
            page = [e["extra"]["n"] for e in resp.json()]
            assert len(page) <= 5
            seen += page
            cursor = resp.headers.get(NEXT_CURSOR_HEADER)
            if cursor is None:
                break
            assert len(page) == 5
            params = {"type": "t.cap", "cursor": cursor}
        assert seen == list(range(12))
        resp = await admin.get("/v1/audit/export", params={"type": "t.cap", "limit": 2})
        assert len(resp.json()) == 2 and NEXT_CURSOR_HEADER in resp.headers


async def test_export_streams_json_and_csv_from_since(admin, control_plane, clock):
    audit = control_plane.app[AUDIT]
    for i in range(12):
        await audit.record(
            type="token.issued",
            actor="wl",
            outcome="success",
            workload_id="wl_x",
            extra={"n": i, "quote": 'a"b,c'},
        )
        clock.advance(1)
    as_json = (await admin.get("/v1/audit/export", params={"workload_id": "wl_x"})).json()
    assert [e["extra"]["n"] for e in as_json] == list(range(12))  # oldest first
    since = as_json[5]["timestamp"]
    page = (
        await admin.get("/v1/audit/export", params={"workload_id": "wl_x", "since": since, "limit": 3})
    ).json()
    assert [e["extra"]["n"] for e in page] == [5, 6, 7]
    resp = await admin.get("/v1/audit/export", params={"format": "csv", "workload_id": "wl_x"})
    assert resp.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert len(rows) == 12 and rows[0]["type"] == "token.issued"
    empty = (await admin.get("/v1/audit/export", params={"workload_id": "none"})).json()
    assert empty == []
    assert (await admin.get("/v1/audit/export", params={"format": "xml"})).status_code == 400


async def test_prune_deletes_old_rows_and_keeps_the_chain_verifiable(admin, control_plane, clock):
    audit = control_plane.app[AUDIT]
    for _ in range(5):
        await audit.record(type="old", actor="a", outcome="success")
    clock.advance(40 * 86400)
    await audit.record(type="new", actor="a", outcome="success")
    resp = await admin.post("/v1/audit/prune", json={"days": 30})
    assert resp.status_code == 200 and resp.json()["deleted"] == 5
    types = [e["type"] for e in (await admin.get("/v1/audit")).json()["events"]]
    assert "old" not in types and types[0] == "audit.pruned"
    assert (await admin.get("/v1/audit/verify")).json()["ok"] is True
    assert (await admin.post("/v1/audit/prune", json={"days": 0})).status_code == 400


async def test_every_admin_mutation_is_one_committed_audit_event(admin):
    """Each successful registry / key / audit mutation answers only with its event in the log."""
    counter = iter(range(1000))
    made: dict[str, str] = {}

    async def call(method: str, path: str, body: object, expect_type: str) -> dict:
        rid = f"mut-{next(counter)}"
        resp = await admin.request(method, path, json=body, headers={"X-Request-Id": rid})
        assert resp.status_code < 300, (method, path, resp.text)
        events = (await admin.get("/v1/audit", params={"correlation_id": rid})).json()["events"]
        assert [(e["type"], e["outcome"]) for e in events] == [(expect_type, "success")], (method, path)
        return resp.json() if resp.content else {}

    made["wl"] = (await call("POST", "/v1/workloads", workload_body(), "workload.created"))["id"]
    await call("PATCH", f"/v1/workloads/{made['wl']}", {"name": "renamed"}, "workload.updated")
    await call("PATCH", f"/v1/workloads/{made['wl']}", {"status": "revoked"}, "workload.revoked")
    await call("PATCH", f"/v1/workloads/{made['wl']}", {"status": "active"}, "workload.restored")
    made["cl"] = (
        await call("POST", "/v1/clusters", {"name": "c", "issuer": "https://k8s.example"}, "cluster.created")
    )["id"]
    await call("PATCH", f"/v1/clusters/{made['cl']}", {"audience": "sesame-2"}, "cluster.updated")
    made["tg"] = (
        await call("POST", "/v1/targets", {"name": "t", "host": "api.example.com"}, "target.created")
    )["id"]
    await call("PATCH", f"/v1/targets/{made['tg']}", {"port": 8443}, "target.updated")
    provider = {"name": "p", "type": "static", "config": {"value": "sk-audit-secret"}}
    made["cp"] = (await call("POST", "/v1/credential-providers", provider, "credential_provider.created"))[
        "id"
    ]
    await call(
        "POST",
        f"/v1/credential-providers/{made['cp']}/rotate",
        {"config": {"value": "sk-audit-secret-2"}},
        "credential_provider.rotated",
    )
    policy = {
        "workload_id": made["wl"],
        "target_id": made["tg"],
        "provider_id": made["cp"],
        "effect": "allow",
    }
    made["po"] = (await call("POST", "/v1/policies", policy, "policy.created"))["id"]
    await call("PATCH", f"/v1/policies/{made['po']}", {"effect": "deny"}, "policy.updated")
    key = await call("POST", "/v1/api-keys", {"name": "k", "role": "viewer"}, "api_key.created")
    await call("DELETE", f"/v1/api-keys/{key['id']}", None, "api_key.revoked")
    for kind, path, rid in (
        ("policy", "/v1/policies", made["po"]),
        ("credential_provider", "/v1/credential-providers", made["cp"]),
        ("target", "/v1/targets", made["tg"]),
        ("cluster", "/v1/clusters", made["cl"]),
        ("workload", "/v1/workloads", made["wl"]),
    ):
        await call("DELETE", f"{path}/{rid}", None, f"{kind}.deleted")
    await call("POST", "/v1/audit/prune", {"days": 30}, "audit.pruned")
    log = (await admin.get("/v1/audit/export")).text
    assert "sk-audit-secret" not in log
