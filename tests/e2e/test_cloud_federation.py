"""GitHub App, Microsoft Entra ID and Google Cloud providers against local servers that speak each
service's documented wire format (no real peer can run here), with the real control plane, the
proxy, and unmodified clients on the app side (`requests`, `google-cloud-storage` with anonymous
credentials). Each server checks what Sesame sends (fields, content types, the signed token against
the key it trusts) and answers, or refuses, in the service's own format:

- GitHub: https://docs.github.com/en/rest/apps/apps#create-an-installation-access-token-for-an-app
  (201 `{"token", "expires_at", "permissions", "repository_selection"}`; 404/422
  `{"message", "documentation_url"}`), app JWT per
  https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-json-web-token-jwt-for-a-github-app
- Entra ID: https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow
  (form POST, `client_assertion_type` jwt-bearer; 200 `{"token_type", "expires_in",
  "ext_expires_in", "access_token"}`; 400 `{"error": "invalid_client", "error_description":
  "AADSTS700211: …", "error_codes": [700211], …}`)
- Google STS: https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token (form; 200
  `{"access_token", "issued_token_type", "token_type", "expires_in"}`; 400 `{"error":
  "invalid_grant", "error_description": …}`), IAM Credentials generateAccessToken:
  https://cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts/generateAccessToken
  (`{"accessToken", "expireTime"}`), and the Cloud Storage JSON API's object download
  (`GET /storage/v1/b/{bucket}/o/{object}?alt=media`) for the app.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import requests
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from devkit.controlplane_server import serving
from tests.e2e.conftest import NAMESPACE, SERVICE_ACCOUNT, Sesame
from tests.e2e.test_proxy_with_control_plane import proxy_url, start

SUBJECT = f"sesame://local/ns/{NAMESPACE}/sa/{SERVICE_ACCOUNT}"
GCP_PROVIDER = (
    "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/sesame/providers/prod"
)
SA_EMAIL = "reader@my-project.iam.gserviceaccount.com"


def _rfc3339(seconds_from_now: int) -> str:
    at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds_from_now)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


async def _verify_sesame_jwt(jwks_url: str, token: str, audience: str) -> dict[str, Any]:
    """What a cloud does with Sesame's token: fetch the issuer's JWKS, check signature and `aud`."""
    async with aiohttp.ClientSession() as http, http.get(jwks_url) as resp:
        keys = jwt.PyJWKSet.from_dict(await resp.json())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in keys.keys if k.key_id == kid)
    return jwt.decode(token, key.key, algorithms=["ES256"], audience=audience)


class CloudDouble:
    """One aiohttp server playing GitHub, Entra ID, Google STS/IAM and Cloud Storage."""

    def __init__(self, jwks_url: str) -> None:
        self.jwks_url = jwks_url
        self.calls: list[dict[str, Any]] = []
        self.github_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.issued: set[str] = set()
        self.app_requests: list[str | None] = []
        self.url = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/app/installations/{id}/access_tokens", self.github_token)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self.entra_token)
        app.router.add_post("/v1/token", self.google_sts)
        app.router.add_post("/v1/projects/-/serviceAccounts/{name}", self.generate_access_token)
        app.router.add_get("/{tail:.*}", self.api)
        return app

    def private_pem(self) -> str:
        return self.github_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()

    def _issue(self, prefix: str) -> str:
        token = prefix + secrets.token_urlsafe(24)
        self.issued.add(token)
        return token

    async def github_token(self, request: web.Request) -> web.Response:
        body = await request.json()
        auth = request.headers.get("Authorization", "")
        self.calls.append(
            {"service": "github", "path": request.path, "body": body, "headers": dict(request.headers)}
        )
        try:
            claims = jwt.decode(
                auth.removeprefix("Bearer "), self.github_key.public_key(), algorithms=["RS256"]
            )
        except jwt.PyJWTError:
            return web.json_response(
                {
                    "message": "A JSON web token could not be decoded",
                    "documentation_url": "https://docs.github.com/rest",
                },
                status=401,
            )
        assert claims["exp"] - claims["iat"] <= 600 and claims["iss"] == "Iv23liSESAME"
        if request.match_info["id"] != "4242":
            return web.json_response(
                {
                    "message": "Not Found",
                    "documentation_url": "https://docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app",
                    "status": "404",
                },
                status=404,
            )
        return web.json_response(
            {
                "token": self._issue("ghs_"),
                "expires_at": _rfc3339(3600),
                "permissions": body.get("permissions", {}),
                "repository_selection": "selected",
                "repositories": [{"name": n} for n in body.get("repositories", [])],
            },
            status=201,
        )

    async def entra_token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.calls.append(
            {
                "service": "entra",
                "tenant": request.match_info["tenant"],
                "form": form,
                "content_type": request.content_type,
            }
        )
        try:
            claims = await _verify_sesame_jwt(
                self.jwks_url, str(form.get("client_assertion")), "api://AzureADTokenExchange"
            )
            ok = claims["sub"] == SUBJECT and form.get("grant_type") == "client_credentials"
        except jwt.PyJWTError:
            ok = False
        if (
            not ok
            or form.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        ):
            return web.json_response(
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS700211: No matching federated identity record found for "
                    "presented assertion issuer.",
                    "error_codes": [700211],
                    "timestamp": "2026-01-01 00:00:00Z",
                    "trace_id": "00000000-0000-0000-0000-000000000000",
                    "correlation_id": "00000000-0000-0000-0000-000000000000",
                },
                status=400,
            )
        return web.json_response(
            {
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": self._issue("eyJ0eXAiOiJKV1Qi.entra."),
            }
        )

    async def google_sts(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.calls.append({"service": "google-sts", "form": form, "content_type": request.content_type})
        try:
            claims = await _verify_sesame_jwt(
                self.jwks_url, str(form.get("subject_token")), "https:" + GCP_PROVIDER
            )
            assert claims["sub"] == SUBJECT
        except jwt.PyJWTError:
            return web.json_response(
                {
                    "error": "invalid_grant",
                    "error_description": "The audience in ID Token does not match the expected audience.",
                },
                status=400,
            )
        assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:token-exchange"
        assert form["audience"] == GCP_PROVIDER
        return web.json_response(
            {
                "access_token": self._issue("ya29.federated."),
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer",
                "expires_in": 3600,
            }
        )

    async def generate_access_token(self, request: web.Request) -> web.Response:
        body = await request.json()
        auth = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.calls.append(
            {
                "service": "iam",
                "name": request.match_info["name"],
                "body": body,
                "federated": auth in self.issued and auth.startswith("ya29.federated."),
            }
        )
        if not (auth in self.issued and auth.startswith("ya29.federated.")):
            return web.json_response(
                {
                    "error": {
                        "code": 401,
                        "message": "Request had invalid authentication credentials.",
                        "status": "UNAUTHENTICATED",
                    }
                },
                status=401,
            )
        return web.json_response({"accessToken": self._issue("ya29.sa."), "expireTime": _rfc3339(3600)})

    async def api(self, request: web.Request) -> web.Response:
        """The APIs the apps call: any path, answered when the bearer token is one this server issued."""
        auth = request.headers.get("Authorization")
        self.app_requests.append(auth)
        if auth is None or auth.removeprefix("Bearer ") not in self.issued:
            return web.json_response({"message": "Bad credentials"}, status=401)
        # the JSON API's media download (google-cloud-storage sends it under /download)
        if "/storage/v1/b/" in request.path and request.query.get("alt") == "media":
            return web.Response(body=b"gcs object bytes", content_type="application/octet-stream")
        return web.json_response({"path": request.path, "ok": True})


@pytest.fixture
async def cloud(sesame: Sesame) -> AsyncIterator[CloudDouble]:
    double = CloudDouble(sesame.url + "/v1/jwks")
    async with serving(double.app()) as port:
        double.url = f"http://localhost:{port}"
        double.port = port  # type: ignore[attr-defined]
        yield double


async def govern(sesame: Sesame, cloud: CloudDouble, ptype: str, config: dict[str, Any]) -> str:
    """The double as an http target (bearer injection) behind a provider of `ptype`; its audience."""
    target = await sesame.api(
        "POST",
        "/v1/targets",
        {"name": ptype, "host": "localhost", "port": cloud.port, "scheme": "http", "tls": "none"},
        201,
    )
    provider = await sesame.api(
        "POST", "/v1/credential-providers", {"name": ptype, "type": ptype, "config": config}, 201
    )
    await sesame.api(
        "POST",
        "/v1/policies",
        {
            "workload_id": sesame.workload_id,
            "target_id": target["id"],
            "provider_id": provider["id"],
            "effect": "allow",
            "max_ttl_seconds": 600,
        },
        201,
    )
    return target["audience"]


def github_config(cloud: CloudDouble, installation: int = 4242) -> dict[str, Any]:
    return {
        "app_id": "Iv23liSESAME",
        "installation_id": installation,
        "api_url": cloud.url,
        "repositories": ["sesame"],
        "permissions": {"contents": "read"},
        "private_key": cloud.private_pem(),
    }


def entra_config(cloud: CloudDouble, **extra: Any) -> dict[str, Any]:
    return {
        "tenant_id": "contoso.onmicrosoft.com",
        "client_id": "11111111-2222-3333-4444-555555555555",
        "scope": "https://storage.azure.com/.default",
        "authority_url": cloud.url,
        **extra,
    }


def gcp_config(cloud: CloudDouble, **extra: Any) -> dict[str, Any]:
    return {
        "audience": GCP_PROVIDER,
        "service_account": SA_EMAIL,
        "sts_url": cloud.url + "/v1/token",
        "iam_url": cloud.url,
        **extra,
    }


async def app_get(sesame: Sesame, pki, url: str) -> requests.Response:
    """The app: plain `requests` through the proxy (HTTP_PROXY), no credential of its own."""
    proxy = await start(sesame, pki)
    try:
        return await asyncio.to_thread(requests.get, url, proxies={"http": proxy_url(proxy)}, timeout=10)
    finally:
        await proxy.close()


def _nowhere(sesame: Sesame, texts: list[str], values: list[str]) -> None:
    db = Path(sesame.token_file).parent / "cp.db"
    raw = db.read_bytes() + b"".join(p.read_bytes() for p in db.parent.glob("cp.db-wal"))
    for value in values:
        assert value.encode() not in raw
        assert all(value not in text for text in texts)


async def test_github_app_installation_token_narrowed_and_injected(sesame, cloud, pki, caplog):
    await govern(sesame, cloud, "github-app", github_config(cloud))
    resp = await app_get(sesame, pki, f"http://localhost:{cloud.port}/repos/acme/sesame")
    assert resp.status_code == 200, resp.text
    [call] = cloud.calls
    assert call["path"] == "/app/installations/4242/access_tokens"
    assert call["body"] == {"repositories": ["sesame"], "permissions": {"contents": "read"}}
    headers = {k.lower(): v for k, v in call["headers"].items()}
    assert headers["accept"] == "application/vnd.github+json"
    assert headers["x-github-api-version"] == "2022-11-28" and headers["user-agent"]
    assert headers["content-type"].startswith("application/json")
    [token] = cloud.issued
    assert cloud.app_requests == [f"Bearer {token}"]
    events = json.dumps((await sesame.api("GET", "/v1/audit?limit=50"))["events"])
    key_body = cloud.private_pem().splitlines()[5]  # a line of the private key's base64
    _nowhere(sesame, [events, caplog.text], [key_body, token])
    provider = (await sesame.api("GET", "/v1/credential-providers"))["data"][0]
    assert "private_key" not in provider["config"] and provider["secret_fields"] == ["private_key"]


async def test_github_app_refused_installation_is_denied_for_the_app_and_audited(sesame, cloud, pki):
    await govern(sesame, cloud, "github-app", github_config(cloud, installation=999))
    resp = await app_get(sesame, pki, f"http://localhost:{cloud.port}/repos/acme/sesame")
    assert resp.status_code == 403 and resp.json()["error"] == "provider_denied", resp.text
    assert "404" in resp.json()["message"] and cloud.app_requests == []
    await _assert_denial_audited(sesame, "github-app")


async def _assert_denial_audited(sesame: Sesame, target: str) -> None:
    events = (await sesame.api("GET", "/v1/audit?limit=50"))["events"]
    assert any(
        e["type"] == "token.denied" and e["target_service"] == target and e["reason"] == "provider_denied"
        for e in events
    )


async def test_azure_federated_client_assertion_and_bearer_injection(sesame, cloud, pki, caplog):
    await govern(sesame, cloud, "azure-federated", entra_config(cloud))
    resp = await app_get(sesame, pki, f"http://localhost:{cloud.port}/container?restype=container")
    assert resp.status_code == 200, resp.text
    [call] = cloud.calls
    assert call["tenant"] == "contoso.onmicrosoft.com"
    assert call["content_type"] == "application/x-www-form-urlencoded"
    form = call["form"]
    assert form["client_id"] == "11111111-2222-3333-4444-555555555555"
    assert form["scope"] == "https://storage.azure.com/.default" and "client_secret" not in form
    [token] = cloud.issued
    events = json.dumps((await sesame.api("GET", "/v1/audit?limit=50"))["events"])
    _nowhere(sesame, [events, caplog.text], [token])


async def test_azure_refused_federation_wrong_audience(sesame, cloud, pki):
    await govern(sesame, cloud, "azure-federated", entra_config(cloud, audience="api://wrong"))
    resp = await app_get(sesame, pki, f"http://localhost:{cloud.port}/container")
    assert resp.status_code == 403 and resp.json()["error"] == "provider_denied", resp.text
    assert "invalid_client" in resp.json()["message"] and cloud.app_requests == []
    await _assert_denial_audited(sesame, "azure-federated")


async def test_gcp_federation_and_impersonation_for_google_cloud_storage(sesame, cloud, pki, caplog):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    await govern(sesame, cloud, "gcp-workload-identity", gcp_config(cloud))
    proxy = await start(sesame, pki)

    def download() -> bytes:
        session = requests.Session()
        session.proxies = {"http": proxy_url(proxy)}
        client = storage.Client(
            project="my-project",
            credentials=AnonymousCredentials(),
            _http=session,
            client_options={"api_endpoint": cloud.url},
        )
        return client.bucket("reports").blob("q3.csv").download_as_bytes()

    try:
        data = await asyncio.to_thread(download)
    finally:
        await proxy.close()
    assert data == b"gcs object bytes"
    sts, iam = cloud.calls
    assert sts["service"] == "google-sts" and sts["content_type"] == "application/x-www-form-urlencoded"
    assert sts["form"]["requested_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert sts["form"]["subject_token_type"] == "urn:ietf:params:oauth:token-type:jwt"
    assert sts["form"]["scope"] == "https://www.googleapis.com/auth/cloud-platform"
    assert iam["name"] == f"{SA_EMAIL}:generateAccessToken" and iam["federated"]
    assert iam["body"] == {"scope": ["https://www.googleapis.com/auth/cloud-platform"], "lifetime": "3600s"}
    [sa_token] = [t for t in cloud.issued if t.startswith("ya29.sa.")]
    assert set(cloud.app_requests) == {f"Bearer {sa_token}"}  # the impersonated token, not the federated
    events = json.dumps((await sesame.api("GET", "/v1/audit?limit=50"))["events"])
    _nowhere(sesame, [events, caplog.text], list(cloud.issued))


async def test_gcp_refused_federation_wrong_audience(sesame, cloud, pki):
    await govern(
        sesame,
        cloud,
        "gcp-workload-identity",
        gcp_config(cloud, token_audience="https://iam.googleapis.com/other"),
    )
    resp = await app_get(sesame, pki, f"http://localhost:{cloud.port}/storage/v1/b/reports/o")
    assert resp.status_code == 403 and resp.json()["error"] == "provider_denied", resp.text
    assert "invalid_grant" in resp.json()["message"] and cloud.app_requests == []
    assert [c["service"] for c in cloud.calls] == ["google-sts"]
    await _assert_denial_audited(sesame, "gcp-workload-identity")
