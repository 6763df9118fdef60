"""The proxy passes the control plane's `provider_timeout` / `provider_unavailable` to the app:
the credential provider failed, not the control plane (which answered)."""

from __future__ import annotations

import pytest
from aiohttp import web

from proxy.controlplane_client import ControlPlaneClient
from proxy.errors import CredentialUnavailable, ProviderFailed
from proxy.identity import TokenFile


@pytest.mark.parametrize(("code", "status"), [("provider_timeout", 504), ("provider_unavailable", 503)])
async def test_the_proxy_passes_the_providers_failure_to_the_app(token_file, code, status) -> None:
    async def token_exchange(request: web.Request) -> web.Response:
        return web.json_response({"error": code, "message": "cp_1 did not answer"}, status=status)

    app = web.Application()
    app.router.add_post("/v1/token-exchange", token_exchange)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    client = ControlPlaneClient(f"http://127.0.0.1:{runner.addresses[0][1]}", TokenFile(token_file))
    try:
        with pytest.raises(ProviderFailed) as info:
            await client.exchange("https://api.example")
    finally:
        await client.close()
        await runner.cleanup()
    assert (info.value.code, info.value.status) == (code, status)
    assert "unreachable" not in info.value.message
    assert isinstance(info.value, CredentialUnavailable)  # a cached credential may keep serving
