"""The proxy reaches a control plane served over HTTPS by trusting SESAME_CONTROL_PLANE_CA.

In a cluster the chart signs the control plane's serving certificate with its own CA, which no
system root store knows; the webhook hands the proxy that CA as SESAME_CONTROL_PLANE_CA (PEM
text). Here both sides are real processes: `sesame-controlplane serve --tls-cert/--tls-key`
and `sesame-proxy run`, with certificates from a throwaway CA that signs nothing else.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from devkit.certs import DevCA
from devkit.controlplane_server import LOOPBACK_ENV, ControlPlaneProcess, control_plane_process
from devkit.issuer import ClusterIssuer
from devkit.registry_bodies import service_account_workload
from devkit.upstream import ApiServer, server_context
from tests.e2e.conftest import NAMESPACE, SERVICE_ACCOUNT
from tests.proxy.conftest import API_KEY, Pki
from tests.proxy.procs import ProxyProcess, governed_args, start_proxy_process

POLL_ATTEMPTS = 200  # x 0.05 s: the bound of every wait below


@dataclass
class TlsControlPlane:
    process: ControlPlaneProcess
    ca: DevCA
    ca_file: Path

    @property
    def url(self) -> str:
        return self.process.url


@pytest.fixture
def tls_control_plane(tmp_path: Path) -> Iterator[TlsControlPlane]:
    ca = DevCA("Sesame Control Plane CA")
    ca_file = ca.write_ca(tmp_path / "cp-ca.pem")
    cert = ca.issue(["127.0.0.1", "localhost"], tmp_path / "cp-tls", stem="controlplane")
    args = ("--tls-cert", str(cert.cert_file), "--tls-key", str(cert.key_file))
    with control_plane_process(tmp_path / "cp.db", args=args, env=LOOPBACK_ENV) as process:
        yield TlsControlPlane(process, ca, ca_file)


@pytest.fixture
async def admin(tls_control_plane: TlsControlPlane) -> AsyncIterator[httpx.AsyncClient]:
    verify = ssl.create_default_context(cafile=str(tls_control_plane.ca_file))
    headers = {"Authorization": f"Bearer {tls_control_plane.process.owner_key}"}
    async with httpx.AsyncClient(
        base_url=tls_control_plane.url, verify=verify, headers=headers, timeout=10
    ) as client:
        yield client


async def _post(admin: httpx.AsyncClient, path: str, body: dict) -> dict:
    resp = await admin.post(path, json=body)
    assert resp.status_code == 201, (path, resp.status_code, resp.text)
    return resp.json()


async def _govern(admin: httpx.AsyncClient, issuer: ClusterIssuer, port: int) -> None:
    """Trust the issuer, register the workload, and allow it a static key for localhost:<port>."""
    await _post(admin, "/v1/clusters", {"name": "local", "issuer": issuer.issuer})
    workload = await _post(
        admin,
        "/v1/workloads",
        service_account_workload(
            "checkout", namespace=NAMESPACE, service_account=SERVICE_ACCOUNT, cluster="local"
        ),
    )
    target = await _post(admin, "/v1/targets", {"name": "payments", "host": "localhost", "port": port})
    provider = await _post(
        admin, "/v1/credential-providers", {"name": "key", "type": "static", "config": {"value": API_KEY}}
    )
    await _post(
        admin,
        "/v1/policies",
        {
            "workload_id": workload["id"],
            "target_id": target["id"],
            "provider_id": provider["id"],
            "effect": "allow",
        },
    )


@asynccontextmanager
async def _governed_proxy(
    cp: TlsControlPlane, admin: httpx.AsyncClient, pki: Pki, tmp_path: Path, *, control_plane_ca: bytes
) -> AsyncIterator[tuple[ApiServer, ProxyProcess]]:
    """An HTTPS upstream, a workload allowed to call it, and a proxy given `control_plane_ca` (PEM)."""
    api = await ApiServer(API_KEY, ssl_context=server_context(pki.server_cert, pki.server_key)).start()
    proxy = None
    try:
        async with ClusterIssuer() as issuer:
            token_file = issuer.write_token(
                tmp_path / "token", namespace=NAMESPACE, service_account=SERVICE_ACCOUNT
            )
            await _govern(admin, issuer, api.port)
            # PEM text in the environment, exactly what the webhook injects.
            env = {"SESAME_CONTROL_PLANE_CA": control_plane_ca.decode()}
            proxy = await start_proxy_process(
                *governed_args(cp.url, Path(token_file), pki),
                "--pod-name",
                "checkout-7d9f",
                "--heartbeat-interval",
                "0.2",
                env=env,
            )
            yield api, proxy
    finally:
        if proxy is not None:
            await proxy.stop()
        await api.close()


async def test_proxy_trusting_the_control_plane_ca_gets_routes_credentials_and_heartbeats(
    tls_control_plane, admin, pki, tmp_path
):
    ca_pem = tls_control_plane.ca.cert_pem
    governed = _governed_proxy(tls_control_plane, admin, pki, tmp_path, control_plane_ca=ca_pem)
    async with governed as (api, proxy):
        ready = await proxy.wait_ready(POLL_ATTEMPTS)
        assert ready.status_code == 200, ready.text
        verify = ssl.create_default_context(cafile=str(pki.client_bundle))
        async with httpx.AsyncClient(proxy=proxy.url, verify=verify, timeout=10) as client:
            resp = await client.get(f"https://localhost:{api.port}/v1/charges")
        assert resp.status_code == 200, resp.text
        assert [s.authorized for s in api.seen] == [True]
        fleet: list[dict] = []
        for _ in range(POLL_ATTEMPTS):
            fleet = (await admin.get("/v1/proxies")).json()["data"]
            if fleet:
                break
            await asyncio.sleep(0.05)
        assert [p["pod"] for p in fleet] == ["checkout-7d9f"]
    events = (await admin.get("/v1/audit", params={"type": "token.issued"})).json()["events"]
    assert [(e["target_service"], e["outcome"]) for e in events] == [("payments", "success")]
    log = tls_control_plane.process.log_text()
    assert API_KEY not in log


async def test_proxy_without_the_control_plane_ca_refuses_the_connection_and_stays_unready(
    tls_control_plane, admin, pki, tmp_path
):
    # A CA that did not sign the control plane's certificate: verification must fail.
    stranger = DevCA("Not The Control Plane CA").cert_pem
    governed = _governed_proxy(tls_control_plane, admin, pki, tmp_path, control_plane_ca=stranger)
    async with governed as (api, proxy):
        failure = await proxy.wait_for_log("route refresh failed")
        assert failure["error"] == "credential_unavailable"
        async with httpx.AsyncClient(timeout=5) as client:
            ready = await client.get(proxy.admin_url + "/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["routes"] == "not_loaded"
    assert api.seen == []
    assert (await admin.get("/v1/proxies")).json()["data"] == []
    events = (await admin.get("/v1/audit", params={"type": "token.issued"})).json()["events"]
    assert events == []
