"""The devkit cluster issuer serves what kube-apiserver serves (no apiserver can run here).

Field lists follow kube-apiserver's `/.well-known/openid-configuration`, `/openid/v1/jwks`
and the projected service-account token layout.
"""

from __future__ import annotations

import aiohttp
import jwt
import pytest

from devkit.issuer import ClusterIssuer

NOW = 1_780_000_000


@pytest.fixture
async def issuer():
    async with ClusterIssuer(clock=lambda: NOW) as issuer:
        yield issuer


async def test_discovery_document_has_the_apiserver_fields(issuer: ClusterIssuer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(issuer.url + "/.well-known/openid-configuration") as resp:
            doc = await resp.json()
    assert doc == {
        "issuer": issuer.url,
        "jwks_uri": issuer.url + "/openid/v1/jwks",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256", "RS256"],
    }


async def test_jwks_lists_rsa_and_ec_signing_keys(issuer: ClusterIssuer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(issuer.jwks_uri) as resp:
            keys = (await resp.json(content_type=None))["keys"]
    by_kty = {k["kty"]: k for k in keys}
    assert set(by_kty["RSA"]) == {"use", "kty", "kid", "alg", "n", "e"}
    assert set(by_kty["EC"]) == {"use", "kty", "kid", "crv", "alg", "x", "y"}
    assert by_kty["RSA"]["alg"] == "RS256" and by_kty["EC"]["alg"] == "ES256"
    assert all(k["use"] == "sig" for k in keys)


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
async def test_minted_token_has_the_projected_token_layout(issuer: ClusterIssuer, alg: str) -> None:
    token = issuer.mint(
        namespace="shop", service_account="checkout", alg=alg, ttl=600, pod_name="checkout-1", pod_uid="uid-1"
    )
    header = jwt.get_unverified_header(token)
    key = next(k for k in issuer.keys if k.kid == header["kid"])
    claims = jwt.decode(
        token,
        key.private_key.public_key(),
        algorithms=[alg],
        audience="sesame",
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert header["alg"] == alg
    assert set(claims) == {"aud", "exp", "iat", "iss", "jti", "kubernetes.io", "nbf", "sub"}
    assert claims["aud"] == ["sesame"]
    assert claims["sub"] == "system:serviceaccount:shop:checkout"
    assert (claims["iat"], claims["nbf"], claims["exp"]) == (NOW, NOW, NOW + 600)
    k8s = claims["kubernetes.io"]
    assert k8s["namespace"] == "shop"
    assert k8s["pod"] == {"name": "checkout-1", "uid": "uid-1"}
    assert k8s["serviceaccount"]["name"] == "checkout" and k8s["serviceaccount"]["uid"]
    assert set(k8s["node"]) == {"name", "uid"}


def test_issuer_runs_in_a_thread_for_synchronous_callers(tmp_path) -> None:
    import json
    import urllib.request

    with ClusterIssuer.in_thread() as issuer:
        with urllib.request.urlopen(issuer.jwks_uri, timeout=10) as resp:
            keys = json.load(resp)["keys"]
        path = issuer.write_token(tmp_path / "sesame" / "token", namespace="ns", service_account="sa")
    token = path.read_text()
    assert jwt.get_unverified_header(token)["kid"] in {k["kid"] for k in keys}
    assert path.stat().st_mode & 0o777 == 0o600
