"""Every fetch the control plane makes passes one address policy (SSRF): non-global addresses are
refused unless allow-listed, on the address actually connected to; literal addresses at registration.

The attacker here holds an admin key: they register a cluster or an OAuth2 provider whose URL
points at an internal server. Real servers on loopback play the internal servers.
"""

from __future__ import annotations

import socket

import pytest

from controlplane.attest import ClusterTrust, JwksVerifier
from controlplane.errors import StartupError
from controlplane.exchange_settings import ExchangeSettings
from controlplane.outbound import AddressRefused, OutboundClient, OutboundPolicy, _PolicyResolver
from devkit.issuer import ClusterIssuer
from tests.controlplane.conftest import refusal
from tests.controlplane.exchange_support import allow, exchange_env, serve_token_endpoint

REFUSED = [
    "127.0.0.1",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # carrier-grade NAT
    "0.0.0.0",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "::ffff:127.0.0.1",  # IPv4-mapped loopback
    "224.0.0.1",
]


@pytest.mark.parametrize("address", REFUSED)
def test_non_global_addresses_are_refused_by_default(address) -> None:
    assert not OutboundPolicy().permits(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_global_addresses_are_permitted(address) -> None:
    assert OutboundPolicy().permits(address)


def test_the_allow_list_admits_exactly_its_networks() -> None:
    policy = OutboundPolicy.parse("10.0.0.0/8, fd00::/8")
    assert policy.permits("10.9.8.7") and policy.permits("fd00::5")
    assert not policy.permits("192.168.1.1") and not policy.permits("127.0.0.1")


def test_a_bad_allow_list_entry_is_a_startup_error() -> None:
    with pytest.raises(StartupError, match="not-a-cidr"):
        OutboundPolicy.parse("10.0.0.0/8,not-a-cidr")


async def test_resolved_addresses_are_filtered_before_connecting() -> None:
    """DNS rebinding: what the resolver answered is what is checked and what is connected to."""

    class Answer:
        def __init__(self, hosts: list[str]) -> None:
            self.hosts = hosts

        async def resolve(self, host, port, family):
            return [{"hostname": host, "host": h, "port": port, "family": socket.AF_INET} for h in self.hosts]

        async def close(self) -> None:
            pass

    resolver = _PolicyResolver(OutboundPolicy())
    resolver._resolver = Answer(["10.0.0.7", "93.184.215.14", "127.0.0.1"])
    assert [r["host"] for r in await resolver.resolve("rebind.example", 443)] == ["93.184.215.14"]
    resolver._resolver = Answer(["169.254.169.254"])
    with pytest.raises(AddressRefused):
        await resolver.resolve("metadata.example", 80)


async def test_a_hostname_that_resolves_to_loopback_is_refused_at_fetch(clock) -> None:
    """`localhost` passes registration (a hostname) but is refused when fetched; nothing is fetched."""
    async with ClusterIssuer(clock=clock.time) as issuer:
        port = issuer.url.rsplit(":", 1)[1]
        cluster = ClusterTrust(name="c", issuer=f"http://localhost:{port}")
        token = issuer.mint(namespace="a", service_account="b")
        error = await refusal(JwksVerifier(clock=clock), token, cluster)
    assert error.reason == "outbound_address_refused"
    assert "localhost" in error.message


async def test_a_literal_loopback_url_is_refused_before_any_connection() -> None:
    client = OutboundClient(OutboundPolicy())
    try:
        with pytest.raises(AddressRefused):
            await client.request("GET", "http://127.0.0.1:1/", timeout_seconds=1, max_bytes=10)
        with pytest.raises(AddressRefused):
            await client.request("GET", "http://[::ffff:7f00:1]:1/", timeout_seconds=1, max_bytes=10)
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"issuer": "https://10.0.0.1"}, "issuer"),
        ({"issuer": "https://k8s.example", "jwks_uri": "https://169.254.169.254/keys"}, "jwks_uri"),
        ({"issuer": "https://k8s.example", "jwks_uri": "https://[::1]:6443/openid/v1/jwks"}, "jwks_uri"),
    ],
)
async def test_a_cluster_on_a_literal_private_address_is_refused_at_registration(admin, body, field) -> None:
    resp = await admin.post("/v1/clusters", json={"name": "c", **body})
    assert resp.status_code == 403, resp.text
    assert resp.json()["error"] == "outbound_address_refused" and resp.json()["field"] == field
    events = (await admin.get("/v1/audit", params={"type": "outbound.refused"})).json()["events"]
    assert events and events[0]["reason"] == "outbound_address_refused"
    assert events[0]["extra"]["field"] == field


async def test_an_oauth2_token_url_on_a_literal_private_address_is_refused(admin) -> None:
    body = {
        "name": "internal",
        "type": "oauth2-client-credentials",
        "config": {"token_url": "https://10.0.0.5/token", "client_id": "c", "client_secret": "s"},
    }
    resp = await admin.post("/v1/credential-providers", json=body)
    assert resp.status_code == 403 and resp.json()["error"] == "outbound_address_refused"
    ok = await admin.post(
        "/v1/credential-providers",
        json={**body, "config": {**body["config"], "token_url": "https://auth.example/token"}},
    )
    assert ok.status_code == 201
    patch = await admin.patch(
        f"/v1/credential-providers/{ok.json()['id']}",
        json={"config": {"token_url": "https://192.168.0.1/t", "client_secret": "s"}},
    )
    assert patch.status_code == 403 and patch.json()["error"] == "outbound_address_refused"


async def test_an_internal_token_endpoint_never_reaches_the_workload(tmp_path) -> None:
    """Before: the control plane POSTed to the internal server and handed its access_token to the
    workload. Now the exchange is refused with a stable code and the server sees no request."""
    async with (
        serve_token_endpoint() as internal,
        exchange_env(tmp_path, ExchangeSettings(), outbound=OutboundPolicy(), tokenreview=True) as env,
    ):
        port = internal.url.split(":")[2].split("/")[0]
        provider = await env.create(
            "/v1/credential-providers",
            {
                "name": "internal",
                "type": "oauth2-client-credentials",
                "config": {
                    "token_url": f"https://localhost:{port}/oauth/token",
                    "client_id": "sesame-client",
                    "client_secret": "s3cr3t:with/odd+chars",
                    "ca_pem": internal.ca_pem,
                },
            },
        )
        await allow(env, provider_id=provider["id"])
        resp = await env.exchange()
        assert resp.status_code == 502, resp.text
        assert resp.json()["error"] == "outbound_address_refused"
        assert "upstream-" not in resp.text
        assert internal.calls == []
        denied = await env.audit(type="token.denied")
        assert denied[0]["reason"] == "outbound_address_refused"


async def test_the_allow_list_lets_an_in_cluster_token_server_through(tmp_path) -> None:
    async with (
        serve_token_endpoint() as internal,
        exchange_env(
            tmp_path, ExchangeSettings(), outbound=OutboundPolicy.parse("127.0.0.1/32"), tokenreview=True
        ) as env,
    ):
        provider = await env.create(
            "/v1/credential-providers",
            {
                "name": "internal",
                "type": "oauth2-client-credentials",
                "config": {
                    "token_url": internal.url,
                    "client_id": "sesame-client",
                    "client_secret": "s3cr3t:with/odd+chars",
                    "ca_pem": internal.ca_pem,
                },
            },
        )
        await allow(env, provider_id=provider["id"])
        resp = await env.exchange()
        assert resp.status_code == 200, resp.text
        assert resp.json()["access_token"] == "upstream-1"
