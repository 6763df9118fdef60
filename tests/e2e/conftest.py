"""End-to-end fixtures: the real control plane (SQLite), the local cluster issuer, real upstreams."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devkit.controlplane_server import LOOPBACK, running_control_plane
from devkit.issuer import ClusterIssuer
from devkit.registry_bodies import service_account_workload
from tests.proxy.conftest import pki  # noqa: F401  (the session PKI fixture, shared with tests/proxy)

NAMESPACE, SERVICE_ACCOUNT = "shop", "checkout"


@dataclass
class Sesame:
    """The control plane, its admin API, and a registered cluster + workload with a token file."""

    url: str
    owner_key: str
    issuer: ClusterIssuer
    token_file: Path
    http: aiohttp.ClientSession
    workload_id: str = ""

    async def api(self, method: str, path: str, body: Any = None, expect: int | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.owner_key}"}
        async with self.http.request(method, self.url + path, json=body, headers=headers) as resp:
            data = await resp.json() if resp.content_type == "application/json" else None
            if expect is not None:
                assert resp.status == expect, (method, path, resp.status, data)
            return data

    async def govern(
        self, name: str, host: str, port: int, secret: str, *, effect: str = "allow", **target: Any
    ) -> dict[str, str]:
        """Register a target and a static provider, and a policy (`effect`) for the workload → their ids."""
        tg = await self.api("POST", "/v1/targets", {"name": name, "host": host, "port": port, **target}, 201)
        pr = await self.api(
            "POST",
            "/v1/credential-providers",
            {"name": f"{name}-key", "type": "static", "config": {"value": secret}},
            201,
        )
        pol = await self.api(
            "POST",
            "/v1/policies",
            {
                "workload_id": self.workload_id,
                "target_id": tg["id"],
                "provider_id": pr["id"],
                "effect": effect,
                "max_ttl_seconds": 600,
            },
            201,
        )
        return {"target": tg["id"], "provider": pr["id"], "policy": pol["id"]}


async def register_workload(s: Sesame) -> None:
    """Trust the issuer as cluster "local" and register the token's service account as a workload."""
    await s.api("POST", "/v1/clusters", {"name": "local", "issuer": s.issuer.issuer}, 201)
    body = service_account_workload(
        "checkout", namespace=NAMESPACE, service_account=SERVICE_ACCOUNT, cluster="local"
    )
    wl = await s.api("POST", "/v1/workloads", body, 201)
    s.workload_id = wl["id"]


@pytest.fixture
async def sesame(tmp_path: Path) -> AsyncIterator[Sesame]:
    async with (
        ClusterIssuer() as issuer,
        running_control_plane(tmp_path / "cp.db", outbound=LOOPBACK) as cp,
        aiohttp.ClientSession() as http,
    ):
        token_file = issuer.write_token(
            tmp_path / "token", namespace=NAMESPACE, service_account=SERVICE_ACCOUNT
        )
        s = Sesame(cp.url, cp.owner_key, issuer, Path(token_file), http)
        await register_workload(s)
        yield s
