"""Issuer and URL fields are absolute https URLs (http only on a loopback host, for development),
refused with a 400 that says so; the OpenAPI pattern admits exactly what the server does."""

from __future__ import annotations

import re

import pytest

from controlplane.api.clusters import CLUSTER_IN
from controlplane.validation import HTTPS_URL_HINT, HTTPS_URL_PATTERN

GOOD = [
    "https://kubernetes.default.svc.cluster.local",
    "https://oidc.eks.eu-west-1.amazonaws.com/id/ABC",
    "https://[2001:db8::1]:6443/openid/v1/jwks",
    "http://127.0.0.1:8080",
    "http://localhost:9000/token",
    "http://[::1]:6443/keys",
]
BAD = [
    "not-a-url",
    "kubernetes/serviceaccount",
    "http://k8s.example",
    "http://10.0.0.1/keys",
    "ftp://k8s.example",
    "https://",
    "https://k8s.example/with space",
    "//k8s.example",
]


@pytest.mark.parametrize("url", GOOD)
def test_https_and_loopback_http_are_accepted(url):
    assert re.fullmatch(HTTPS_URL_PATTERN, url)


@pytest.mark.parametrize("url", BAD)
async def test_issuer_must_be_an_absolute_https_url(admin, url):
    resp = await admin.post("/v1/clusters", json={"name": "c", "issuer": url})
    assert resp.status_code == 400, resp.text
    assert resp.json() == {
        "error": "invalid_request",
        "message": f"issuer must be {HTTPS_URL_HINT}",
        "field": "issuer",
    }


async def test_jwks_uri_and_token_url_follow_the_same_rule(admin):
    cluster = {"name": "c", "issuer": "https://k8s.example", "jwks_uri": "http://k8s.example/keys"}
    resp = await admin.post("/v1/clusters", json=cluster)
    assert resp.status_code == 400 and resp.json()["field"] == "jwks_uri"
    body = {
        "name": "p",
        "type": "oauth2-client-credentials",
        "config": {"token_url": "http://auth.example/token", "client_id": "c", "client_secret": "s3cr3t"},
    }
    resp = await admin.post("/v1/credential-providers", json=body)
    assert resp.status_code == 400 and resp.json()["field"] == "config.token_url"
    assert HTTPS_URL_HINT in resp.json()["message"] and "s3cr3t" not in resp.text


async def test_loopback_http_still_meets_the_outbound_policy(admin):
    """http://127.0.0.1 passes validation; the outbound allow-list still decides (refused here)."""
    resp = await admin.post("/v1/clusters", json={"name": "c", "issuer": "http://127.0.0.1:6443"})
    assert resp.status_code == 403 and resp.json()["error"] == "outbound_address_refused"


def test_the_openapi_pattern_is_the_servers():
    pattern = CLUSTER_IN.json_schema()["properties"]["issuer"]["pattern"]
    assert pattern == f"^(?:{HTTPS_URL_PATTERN})$"
    assert all(re.search(pattern, url) for url in GOOD)
    assert not any(re.search(pattern, url) for url in BAD)
