"""Test servers for token-exchange tests: an OAuth2 token endpoint over real TLS on port 0."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import ssl
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import httpx
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from controlplane.attest import TokenReviewSettings
from controlplane.clock import FakeClock
from controlplane.exchange_settings import ExchangeSettings
from controlplane.outbound import OutboundPolicy
from devkit.controlplane_server import LOOPBACK, running_control_plane
from devkit.issuer import ClusterIssuer
from devkit.registry_bodies import service_account_workload
from tests.controlplane.conftest import client_for

CLIENT_ID, CLIENT_SECRET = "sesame-client", "s3cr3t:with/odd+chars"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
STATIC_SECRET = "sk_live_do_not_leak_4242"


def write_self_signed(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed ECDSA certificate for the IP `host` (its own CA) and its key: PEM files in `folder`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sesame-test-server")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "tls.crt", folder / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def self_signed_server(host: str = "127.0.0.1") -> tuple[ssl.SSLContext, str]:
    """A server TLS context for `host` and the PEM of its self-signed certificate (the CA to trust)."""
    cert_path, key_path = write_self_signed(Path(tempfile.mkdtemp(prefix="sesame-tls-")), host)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_path, key_path)
    return ctx, cert_path.read_text()


class TokenEndpoint:
    """An OAuth2 token endpoint that checks client_secret_basic or client_secret_post."""

    def __init__(self) -> None:
        self.calls: list[dict[str, str]] = []
        self.expires_in: int | None = 3600
        self.fail_with: int | None = None
        self.url = ""
        self.ca_pem = ""

    async def handle(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.calls.append(form)
        if self.fail_with:
            return web.json_response({"error": "temporarily_unavailable"}, status=self.fail_with)
        client = (form.get("client_id"), form.get("client_secret"))
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            client = (unquote_plus(user), unquote_plus(password))
        if client != (CLIENT_ID, CLIENT_SECRET) or form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "invalid_client"}, status=401)
        body: dict[str, object] = {"access_token": f"upstream-{len(self.calls)}", "token_type": "bearer"}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return web.json_response(body)


@asynccontextmanager
async def serve_token_endpoint() -> AsyncIterator[TokenEndpoint]:
    endpoint = TokenEndpoint()
    app = web.Application()
    app.router.add_post("/oauth/token", endpoint.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    ctx, ca_pem = self_signed_server()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        endpoint.url = f"https://127.0.0.1:{runner.addresses[0][1]}/oauth/token"
        endpoint.ca_pem = ca_pem
        yield endpoint
    finally:
        await runner.cleanup()


@dataclass
class Env:
    url: str
    admin: httpx.AsyncClient
    http: httpx.AsyncClient
    issuer: ClusterIssuer
    clock: FakeClock
    workload_id: str
    target_id: str
    provider_id: str
    cluster_id: str

    def token(self, **kwargs) -> str:
        kwargs.setdefault("namespace", "shop")
        kwargs.setdefault("service_account", "checkout")
        return self.issuer.mint(**kwargs)

    async def exchange(self, token: str | None = None, audience: str = "https://api.example", **extra):
        body = {"subject_token": token or self.token(), "subject_token_type": JWT_TYPE, "audience": audience}
        return await self.http.post("/v1/token-exchange", json={**body, **extra})

    async def create(self, path: str, body: dict) -> dict:
        resp = await self.admin.post(path, json=body)
        assert resp.status_code == 201, resp.text
        return resp.json()

    async def audit(self, **filters) -> list[dict]:
        resp = await self.admin.get("/v1/audit", params={"limit": 100, **filters})
        assert resp.status_code == 200, resp.text
        return resp.json()["events"]


@asynccontextmanager
async def exchange_env(
    tmp_path: Path,
    settings: ExchangeSettings,
    *,
    outbound: OutboundPolicy = LOOPBACK,
    tokenreview: bool = False,
    **config: Any,
) -> AsyncIterator[Env]:
    """A control plane (port 0, SQLite in tmp_path) trusting a cluster issuer, with one workload,
    one target (audience https://api.example) and one static provider registered; no policy.

    `tokenreview=True` verifies tokens by TokenReview (exempt from the outbound policy) instead of
    the issuer's JWKS, so `outbound` need not allow-list the loopback issuer."""
    clock = FakeClock()
    async with ClusterIssuer(clock=clock.time) as issuer, _exchange_env(
        tmp_path, settings, issuer, clock, outbound=outbound, tokenreview=tokenreview, **config
    ) as env:
        yield env


@asynccontextmanager
async def _exchange_env(
    tmp_path: Path,
    settings: ExchangeSettings,
    issuer: ClusterIssuer,
    clock: FakeClock,
    *,
    outbound: OutboundPolicy,
    tokenreview: bool,
    **config: Any,
) -> AsyncIterator[Env]:
    cluster_body = {"name": "prod", "issuer": issuer.issuer}
    if tokenreview:
        kubeconfig = issuer.write_kubeconfig(tmp_path / "kubeconfig")
        settings = replace(settings, tokenreview=TokenReviewSettings(kubeconfig=str(kubeconfig)))
        cluster_body["verification"] = "tokenreview"
    async with (
        running_control_plane(
            tmp_path / "cp.db",
            clock=clock,
            kek=b"k" * 32,
            rate_limit_per_minute=100_000,
            exchange=settings,
            outbound=outbound,
            **config,
        ) as cp,
        client_for(cp, cp.owner_key) as admin,
        client_for(cp, None) as http,
    ):
        partial = Env(cp.url, admin, http, issuer, clock, "", "", "", "")
        cluster = await partial.create("/v1/clusters", cluster_body)
        workload = await partial.create(
            "/v1/workloads",
            service_account_workload(
                "checkout", namespace="shop", service_account="checkout", cluster="prod"
            ),
        )
        target = await partial.create(
            "/v1/targets",
            {
                "name": "example-api",
                "host": "api.example",
                "audience": "https://api.example",
            },
        )
        provider = await partial.create(
            "/v1/credential-providers",
            {
                "name": "example-key",
                "type": "static",
                "config": {"value": STATIC_SECRET},
            },
        )
        yield Env(
            cp.url,
            admin,
            http,
            issuer,
            clock,
            workload["id"],
            target["id"],
            provider["id"],
            cluster["id"],
        )


async def allow(env: Env, *, effect: str = "allow", provider_id: str | None = None, ttl: int = 120) -> dict:
    return await env.create(
        "/v1/policies",
        {
            "workload_id": env.workload_id,
            "target_id": env.target_id,
            "provider_id": provider_id or env.provider_id,
            "effect": effect,
            "max_ttl_seconds": ttl,
        },
    )
