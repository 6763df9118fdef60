"""`aws-sts` in web-identity mode (the control plane holds no AWS secret) against a local server that
speaks STS's exact wire format, because moto's AssumeRoleWithWebIdentity neither verifies the token
nor works unsigned with request authentication on (real STS needs no signature for it).

The server does what STS documents for AssumeRoleWithWebIdentity:
https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRoleWithWebIdentity.html —
a form-encoded POST (`Action`, `Version=2011-06-15`, `RoleArn`, `RoleSessionName`,
`WebIdentityToken`, `DurationSeconds`), the token verified against the issuer's JWKS (signature,
`aud`, `exp`), the answer an `AssumeRoleWithWebIdentityResponse` document, and refusals as
`ErrorResponse` documents (https://docs.aws.amazon.com/STS/latest/APIReference/CommonErrors.html):
400 `InvalidIdentityToken` for a wrong audience, 400 `ExpiredTokenException` for an expired token.
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import jwt
import pytest
from aiohttp import web

from devkit.controlplane_server import serving
from tests.e2e.conftest import NAMESPACE, SERVICE_ACCOUNT, Sesame
from tests.e2e.test_proxy_with_control_plane import proxy_url, start

ROLE = "arn:aws:iam::123456789012:role/checkout"
NS = "https://sts.amazonaws.com/doc/2011-06-15/"
SESSION_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY-web-identity"


class StsWireServer:
    """AssumeRoleWithWebIdentity as STS answers it; `skew` moves its clock (to see tokens expire)."""

    def __init__(self, jwks_url: str) -> None:
        self.jwks_url = jwks_url
        self.calls: list[dict[str, Any]] = []
        self.skew = 0.0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        claims: dict[str, Any] = {}
        self.calls.append({"content_type": request.content_type, "form": form, "claims": claims,
                           "authorization": request.headers.get("Authorization")})
        if form.get("Action") != "AssumeRoleWithWebIdentity" or form.get("Version") != "2011-06-15":
            return _error(400, "InvalidAction", "Could not find operation")
        token = str(form.get("WebIdentityToken", ""))
        try:
            async with aiohttp.ClientSession() as http, http.get(self.jwks_url) as resp:
                keys = jwt.PyJWKSet.from_dict(await resp.json())
            kid = jwt.get_unverified_header(token).get("kid")
            key = next(k for k in keys.keys if k.key_id == kid)
            claims.update(jwt.decode(token, options={"verify_signature": False}))
            jwt.decode(token, key.key, algorithms=["ES256", "RS256"], audience="sts.amazonaws.com",
                       options={"verify_exp": False})
        except jwt.InvalidAudienceError:
            return _error(400, "InvalidIdentityToken", "Incorrect token audience")
        except (jwt.PyJWTError, StopIteration):
            return _error(400, "InvalidIdentityToken", "Couldn't verify the token")
        now = datetime.datetime.now(datetime.UTC).timestamp() + self.skew
        if claims["exp"] <= now:
            return _error(400, "ExpiredTokenException", "Token expired")
        expiration = datetime.datetime.fromtimestamp(now + int(form["DurationSeconds"]), datetime.UTC)
        body = f"""<AssumeRoleWithWebIdentityResponse xmlns="{NS}">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>{claims["sub"]}</SubjectFromWebIdentityToken>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/checkout/{form["RoleSessionName"]}</Arn>
      <AssumedRoleId>AROACLKWSDQRAOEXAMPLE:{form["RoleSessionName"]}</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>FwoGZXIvYXdzEXAMPLEsessiontoken</SessionToken>
      <SecretAccessKey>{SESSION_SECRET}</SecretAccessKey>
      <Expiration>{expiration.strftime("%Y-%m-%dT%H:%M:%SZ")}</Expiration>
      <AccessKeyId>ASIAIOSFODNN7EXAMPLE</AccessKeyId>
    </Credentials>
    <Provider>{claims["iss"]}</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"""
        return web.Response(body=body.encode(), content_type="text/xml")


def _error(status: int, code: str, message: str) -> web.Response:
    body = (f'<ErrorResponse xmlns="{NS}"><Error><Type>Sender</Type><Code>{code}</Code>'
            f"<Message>{message}</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>")
    return web.Response(status=status, body=body.encode(), content_type="text/xml")


@pytest.fixture
async def sts(sesame: Sesame) -> AsyncIterator[StsWireServer]:
    server = StsWireServer(sesame.url + "/v1/jwks")
    app = web.Application()
    app.router.add_post("/", server.handle)
    async with serving(app) as port:
        server.url = f"http://127.0.0.1:{port}/"
        yield server


async def govern(sesame: Sesame, sts: StsWireServer, port: int, **config: Any) -> None:
    target = await sesame.api("POST", "/v1/targets", {
        "name": "s3", "host": "bucket.s3.eu-west-1.amazonaws.com", "port": port, "scheme": "http",
        "tls": "none", "injection": {"type": "aws-sigv4"}}, 201)
    provider = await sesame.api("POST", "/v1/credential-providers", {
        "name": "aws", "type": "aws-sts",
        "config": {"role_arn": ROLE, "sts_endpoint": sts.url, "duration_seconds": 900, **config}}, 201)
    await sesame.api("POST", "/v1/policies", {
        "workload_id": sesame.workload_id, "target_id": target["id"], "provider_id": provider["id"],
        "effect": "allow", "max_ttl_seconds": 600}, 201)


async def exchange(sesame: Sesame, audience: str) -> tuple[int, dict[str, Any]]:
    body = {"subject_token": sesame.token_file.read_text(),
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt", "audience": audience}
    async with sesame.http.post(sesame.url + "/v1/token-exchange", json=body) as resp:
        return resp.status, await resp.json()


async def test_web_identity_sends_sts_wire_format_and_issues_session_credentials(sesame, sts):
    await govern(sesame, sts, 80)
    status, body = await exchange(sesame, "http://bucket.s3.eu-west-1.amazonaws.com")
    assert status == 200, body
    creds = json.loads(body["access_token"])
    assert creds["AccessKeyId"] == "ASIAIOSFODNN7EXAMPLE" and creds["SecretAccessKey"] == SESSION_SECRET
    assert creds["Version"] == 1 and creds["SessionToken"]
    assert 500 < body["expires_in"] <= 600  # the policy's max TTL under STS's 900 s
    [call] = sts.calls
    assert call["content_type"] == "application/x-www-form-urlencoded"
    assert call["authorization"] is None  # AssumeRoleWithWebIdentity is not signed: no AWS secret
    form, claims = call["form"], call["claims"]
    assert form["RoleArn"] == ROLE and form["DurationSeconds"] == "900"
    assert form["RoleSessionName"] == f"{NAMESPACE}.{SERVICE_ACCOUNT}"
    assert claims["sub"] == f"sesame://local/ns/{NAMESPACE}/sa/{SERVICE_ACCOUNT}"
    assert claims["iss"] == sesame.url and claims["aud"] == "sts.amazonaws.com"
    assert claims["exp"] - claims["iat"] <= 300
    assert claims["https://aws.amazon.com/tags"]["principal_tags"] == {
        "sesame-cluster": ["local"],
        "sesame-namespace": [NAMESPACE],
        "sesame-service-account": [SERVICE_ACCOUNT],
    }
    # Cached like every credential: a second exchange makes no STS call.
    assert (await exchange(sesame, "http://bucket.s3.eu-west-1.amazonaws.com"))[0] == 200
    assert len(sts.calls) == 1
    events = json.dumps((await sesame.api("GET", "/v1/audit?limit=50"))["events"])
    assert SESSION_SECRET not in events and "FwoGZXIvYXdzEXAMPLEsessiontoken" not in events


@pytest.mark.parametrize(("config", "skew", "code"), [
    ({"audience": "sts.example.com"}, 0.0, "InvalidIdentityToken"),
    ({}, 3600.0, "ExpiredTokenException"),
], ids=["wrong-audience", "expired"])
async def test_refused_federation_is_a_clear_error_for_the_app_and_an_audited_denial(
    sesame, sts, pki, config, skew, code
):
    sts.skew = skew
    await govern(sesame, sts, 80, **config)
    proxy = await start(sesame, pki)
    try:
        async with httpx.AsyncClient(proxy=proxy_url(proxy), timeout=10) as app:
            resp = await app.get("http://bucket.s3.eu-west-1.amazonaws.com/report.csv")
    finally:
        await proxy.close()
    assert resp.status_code == 403, resp.text
    assert resp.json()["error"] == "provider_denied"
    assert code in resp.json()["message"]  # the STS error code, never its message text
    events = (await sesame.api("GET", "/v1/audit?limit=50"))["events"]
    denied = [e for e in events if e["type"] == "token.denied" and e["target_service"] == "s3"]
    assert denied and denied[0]["reason"] == "provider_denied"
    assert len(sts.calls) == 1
