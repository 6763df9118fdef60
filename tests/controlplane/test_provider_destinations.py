"""A provider's secret is bound to where it is sent: an admin who moves `token_url` (or the CA that
decides which server is trusted there) without giving the secret again cannot make the next
exchange send the stored secret to a server of their choosing."""

from __future__ import annotations

from controlplane.appkeys import ENVELOPE, STORE
from controlplane.exchange_settings import ExchangeSettings
from controlplane.outbound import OutboundPolicy
from controlplane.provider_secrets import load_provider
from tests.controlplane.exchange_support import (
    CLIENT_ID,
    CLIENT_SECRET,
    allow,
    exchange_env,
    serve_token_endpoint,
)

LOOPBACK_V4 = OutboundPolicy.parse("127.0.0.1/32")


def _oauth2(endpoint) -> dict:
    return {
        "name": "upstream",
        "type": "oauth2-client-credentials",
        "config": {
            "token_url": endpoint.url,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "ca_pem": endpoint.ca_pem,
        },
    }


async def test_moving_token_url_without_the_secret_clears_it(tmp_path) -> None:
    async with (
        serve_token_endpoint() as legit,
        serve_token_endpoint() as attacker,
        exchange_env(tmp_path, ExchangeSettings(), outbound=LOOPBACK_V4, tokenreview=True) as env,
    ):
        provider = await env.create("/v1/credential-providers", _oauth2(legit))
        await allow(env, provider_id=provider["id"])
        assert (await env.exchange()).status_code == 200
        moved = await env.admin.patch(
            f"/v1/credential-providers/{provider['id']}",
            json={"config": {"token_url": attacker.url, "ca_pem": attacker.ca_pem}},
        )
        assert moved.status_code == 200, moved.text
        assert moved.json()["secret_fields"] == []
        resp = await env.exchange(audience="https://api.example")
        assert resp.status_code == 502 and resp.json()["error"] == "upstream_mint_failed"
        assert attacker.calls == []  # the stored secret never left for the new destination
        rotated = await env.audit(type="credential_provider.rotated")
        assert rotated and rotated[0]["extra"]["id"] == provider["id"]


async def test_moving_token_url_with_the_secret_seals_the_new_one(tmp_path) -> None:
    async with (
        serve_token_endpoint() as old,
        serve_token_endpoint() as new,
        exchange_env(tmp_path, ExchangeSettings(), outbound=LOOPBACK_V4, tokenreview=True) as env,
    ):
        provider = await env.create("/v1/credential-providers", _oauth2(old))
        await allow(env, provider_id=provider["id"])
        resp = await env.admin.patch(
            f"/v1/credential-providers/{provider['id']}",
            json={"config": {"token_url": new.url, "ca_pem": new.ca_pem, "client_secret": CLIENT_SECRET}},
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["secret_fields"] == ["client_secret"]
        assert (await env.exchange()).status_code == 200
        assert len(new.calls) == 1 and old.calls == []
        assert [e["type"] for e in await env.audit(type="credential_provider.rotated")]


async def test_a_cleared_secret_is_empty_in_the_store(admin, control_plane) -> None:
    created = await admin.post(
        "/v1/credential-providers",
        json={
            "name": "p",
            "type": "oauth2-client-credentials",
            "config": {"token_url": "https://a.example/t", "client_id": "c", "client_secret": "s3cret"},
        },
    )
    pid = created.json()["id"]
    resp = await admin.patch(
        f"/v1/credential-providers/{pid}", json={"config": {"token_url": "https://b.example/t"}}
    )
    assert resp.status_code == 200
    _, secret = await load_provider(control_plane.app[STORE].registry, control_plane.app[ENVELOPE], pid)
    assert secret == {}
    # Changing a field that does not decide the destination keeps the secret.
    await admin.post(f"/v1/credential-providers/{pid}/rotate", json={"config": {"client_secret": "s2"}})
    await admin.patch(f"/v1/credential-providers/{pid}", json={"config": {"client_id": "c2"}})
    _, secret = await load_provider(control_plane.app[STORE].registry, control_plane.app[ENVELOPE], pid)
    assert secret == {"client_secret": "s2"}
