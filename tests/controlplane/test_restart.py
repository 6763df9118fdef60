"""A restart keeps all data: registry, keys, audit chain (same SQLite file, same KEK)."""

from __future__ import annotations

from controlplane.appkeys import ENVELOPE, STORE
from controlplane.provider_secrets import load_provider
from devkit.controlplane_server import new_kek, running_control_plane
from tests.controlplane.conftest import client_for, workload_body


async def test_restart_keeps_all_data(tmp_path):
    db, kek = tmp_path / "cp.db", new_kek()
    async with running_control_plane(db, kek=kek) as cp:
        owner = cp.owner_key
        async with client_for(cp, owner) as c:
            wl = (await c.post("/v1/workloads", json=workload_body())).json()
            pid = (
                await c.post(
                    "/v1/credential-providers",
                    json={"name": "p", "type": "static", "config": {"value": "tok"}},
                )
            ).json()["id"]
            tg = (await c.post("/v1/targets", json={"name": "api", "host": "api.example.com"})).json()
            await c.post(
                "/v1/policies",
                json={"workload_id": wl["id"], "target_id": tg["id"], "provider_id": pid, "effect": "allow"},
            )
            before = (await c.get("/v1/audit", params={"limit": 100})).json()["events"]
    async with running_control_plane(db, kek=kek) as cp:
        async with client_for(cp, owner) as c:  # the key from the first run still works
            assert (await c.get(f"/v1/workloads/{wl['id']}")).json()["name"] == "inventory-service"
            assert len((await c.get("/v1/policies")).json()["data"]) == 1
            after = (await c.get("/v1/audit", params={"limit": 100})).json()["events"]
            assert [e["id"] for e in after[-len(before) :]] == [e["id"] for e in before]
            assert (await c.get("/v1/audit/verify")).json()["ok"] is True
        _, secret = await load_provider(cp.app[STORE].registry, cp.app[ENVELOPE], pid)
        assert secret == {"value": "tok"}
