"""Test servers for token-exchange tests: an OAuth2 token endpoint over real TLS on port 0."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import ssl
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import unquote_plus

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CLIENT_ID, CLIENT_SECRET = "sesame-client", "s3cr3t:with/odd+chars"


def self_signed_server(host: str = "127.0.0.1") -> tuple[ssl.SSLContext, str]:
    """A server TLS context for `host` and the PEM of its self-signed certificate (the CA to trust)."""
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
    folder = Path(tempfile.mkdtemp(prefix="sesame-tls-"))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
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
