"""The proxy against the real control plane and the local cluster issuer (projected SA tokens)."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import httpx

from devkit.controlplane_server import LOOPBACK, running_control_plane
from devkit.issuer import ClusterIssuer
from devkit.upstream import ApiServer, server_context
from proxy.app import Proxy
from tests.e2e.conftest import NAMESPACE, SERVICE_ACCOUNT, Sesame, register_workload
from tests.proxy.conftest import API_KEY, FakeClock, Pki, settings_for


async def start(sesame, pki: Pki, clock=None) -> Proxy:
    proxy = Proxy(settings_for(sesame.url, pki, sesame.token_file), clock=clock or FakeClock())
    await proxy.start()
    await proxy.routes.refresh()
    return proxy


def proxy_url(proxy: Proxy) -> str:
    return "http://{}:{}".format(*proxy.listener.address)


async def test_governed_call_gets_the_key_denied_call_gets_403_and_both_are_audited(sesame, pki):
    api = await ApiServer(API_KEY, ssl_context=server_context(pki.server_cert, pki.server_key)).start()
    ledger = await ApiServer(
        "ledger-key", ssl_context=server_context(pki.server_cert, pki.server_key)
    ).start()
    await sesame.govern("payments", "localhost", api.port, API_KEY)
    # A deny policy: the control plane lists the target (effect deny), so the proxy governs it and
    # the exchange refuses, audited. No dependence on when the proxy refreshes its routes.
    await sesame.govern("ledger", "localhost", ledger.port, "ledger-key", effect="deny")
    proxy = await start(sesame, pki)
    assert {r.name for r in proxy.routes.table.routes} == {"payments", "ledger"}
    try:
        verify = ssl.create_default_context(cafile=str(pki.client_bundle))
        async with httpx.AsyncClient(proxy=proxy_url(proxy), verify=verify, timeout=10) as client:
            ok = await client.get(f"https://localhost:{api.port}/v1/charges")
            denied = await client.get(f"https://localhost:{ledger.port}/v1/entries")
            ungoverned = await client.get(f"https://127.0.0.1:{api.port}/v1/charges")
    finally:
        await proxy.close()
        await api.close()
        await ledger.close()
    assert ok.status_code == 200, ok.text
    assert api.seen[0].authorized
    assert denied.status_code == 403
    assert denied.json()["error"] == "policy_denied"
    assert ledger.seen == []
    assert ungoverned.status_code == 401  # not governed: tunneled, no key added
    assert "Authorization" not in api.seen[1].headers
    events = (await sesame.api("GET", "/v1/audit?limit=50"))["events"]
    seen = {(e["type"], e["target_service"], e["outcome"], e["reason"]) for e in events}
    assert ("token.issued", "payments", "success", None) in seen
    assert ("token.denied", "ledger", "denied", "policy_denied") in seen


async def test_cached_credential_outlives_the_control_plane_until_it_expires(tmp_path, pki):
    clock = FakeClock()
    api = await ApiServer(API_KEY, ssl_context=server_context(pki.server_cert, pki.server_key)).start()
    verify = ssl.create_default_context(cafile=str(pki.client_bundle))
    url = f"https://localhost:{api.port}/v1/charges"
    async with ClusterIssuer() as issuer, aiohttp.ClientSession() as http:
        async with running_control_plane(tmp_path / "cp.db", outbound=LOOPBACK) as cp:
            token_file = issuer.write_token(
                tmp_path / "token", namespace=NAMESPACE, service_account=SERVICE_ACCOUNT
            )
            sesame = Sesame(cp.url, cp.owner_key, issuer, Path(token_file), http)
            await register_workload(sesame)
            await sesame.govern("payments", "localhost", api.port, API_KEY)  # max TTL 600 s
            proxy = await start(sesame, pki, clock)
            async with httpx.AsyncClient(proxy=proxy_url(proxy), verify=verify, timeout=10) as client:
                first = await client.get(url)
        # the control plane is gone now
        try:
            async with httpx.AsyncClient(proxy=proxy_url(proxy), verify=verify, timeout=10) as client:
                clock.advance(550)  # past refresh-ahead: the refresh fails, the cached credential serves
                cached = await client.get(url)
                clock.advance(60)  # expired
                closed = await client.get(url)
        finally:
            await proxy.close()
            await api.close()
    assert (first.status_code, cached.status_code, closed.status_code) == (200, 200, 503)
    assert closed.json()["error"] == "credential_unavailable"
    assert [s.authorized for s in api.seen] == [True, True]


async def test_grant_withdrawn_after_routes_loaded_stays_governed_after_a_refresh(sesame, pki):
    api = await ApiServer(API_KEY, ssl_context=server_context(pki.server_cert, pki.server_key)).start()
    ids = await sesame.govern("payments", "localhost", api.port, API_KEY)
    proxy = await start(sesame, pki)
    await sesame.api("PATCH", f"/v1/policies/{ids['policy']}", {"effect": "deny"}, 200)
    await proxy.routes.refresh()  # the refresh that used to drop the route (and ungovern the host)
    try:
        verify = ssl.create_default_context(cafile=str(pki.client_bundle))
        async with httpx.AsyncClient(proxy=proxy_url(proxy), verify=verify, timeout=10) as client:
            denied = await client.get(f"https://localhost:{api.port}/v1/charges")
    finally:
        await proxy.close()
        await api.close()
    assert denied.status_code == 403
    assert denied.json()["error"] == "policy_denied"
    assert api.seen == []
