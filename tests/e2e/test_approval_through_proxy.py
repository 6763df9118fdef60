"""A target behind a require_approval policy is governed by the proxy before any approval exists:
the app gets 403 approval_pending (nothing reaches the upstream) and the approval request is created;
once approved, the same call goes out with the credential. Real proxy, control plane and issuer."""

from __future__ import annotations

import ssl

import httpx

from devkit.upstream import ApiServer, server_context
from tests.e2e.test_proxy_with_control_plane import proxy_url, start
from tests.proxy.conftest import API_KEY


async def test_gated_target_fails_closed_until_approved(sesame, pki) -> None:
    api = await ApiServer(API_KEY, ssl_context=server_context(pki.server_cert, pki.server_key)).start()
    ids = await sesame.govern("payments", "localhost", api.port, API_KEY)
    await sesame.api("PATCH", f"/v1/policies/{ids['policy']}", {"effect": "require_approval"}, 200)
    proxy = await start(sesame, pki)
    try:
        verify = ssl.create_default_context(cafile=str(pki.client_bundle))
        url = f"https://localhost:{api.port}/v1/charges"
        async with httpx.AsyncClient(proxy=proxy_url(proxy), verify=verify, timeout=10) as client:
            pending = await client.get(url)
            approvals = (await sesame.api("GET", "/v1/approvals?status=pending", expect=200))["data"]
            assert [a["target_id"] for a in approvals] == [ids["target"]]
            await sesame.api("POST", f"/v1/approvals/{approvals[0]['id']}/approve", {}, 200)
            approved = await client.get(url)
    finally:
        await proxy.close()
        await api.close()
    assert pending.status_code == 403, pending.text  # passed through ungoverned it would be 401
    assert pending.json()["error"] == "approval_pending"
    assert approved.status_code == 200, approved.text
    assert [s.authorized for s in api.seen] == [True]  # the refused call never left the pod
