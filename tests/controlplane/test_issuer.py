"""The issuer URL (`iss` of signed JWTs, OIDC discovery) is configuration, never a request's Host."""

from __future__ import annotations

import jwt
import pytest

from controlplane.config import Config
from controlplane.errors import StartupError
from controlplane.exchange_settings import ExchangeSettings
from controlplane.main import main
from devkit.controlplane_server import control_plane_process
from tests.controlplane.exchange_support import allow, exchange_env

EVIL = {"Host": "evil.example"}


async def test_a_forged_host_header_changes_neither_discovery_nor_iss(tmp_path) -> None:
    async with exchange_env(tmp_path, ExchangeSettings()) as env:
        provider = await env.create(
            "/v1/credential-providers", {"name": "jwt", "type": "signed-jwt", "config": {}}
        )
        await allow(env, provider_id=provider["id"])
        discovery = (await env.http.get("/.well-known/openid-configuration", headers=EVIL)).json()
        assert discovery["issuer"] == env.url and discovery["jwks_uri"] == env.url + "/v1/jwks"
        body = {
            "subject_token": env.token(),
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "audience": "https://api.example",
        }
        issued = (await env.http.post("/v1/token-exchange", json=body, headers=EVIL)).json()
        claims = jwt.decode(issued["access_token"], options={"verify_signature": False})
        assert claims["iss"] == env.url


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"listen_host": "127.0.0.1", "listen_port": 8080}, "http://127.0.0.1:8080"),
        ({"listen_host": "::1", "listen_port": 9443}, "http://[::1]:9443"),
        (
            {"listen_host": "0.0.0.0", "exchange": ExchangeSettings(issuer_url="https://sesame.example")},
            "https://sesame.example",
        ),
    ],
)
def test_the_issuer_is_configured_or_derived_from_the_listen_address(fields, expected) -> None:
    assert Config(**fields).issuer_url == expected


@pytest.mark.parametrize(("host", "port"), [("0.0.0.0", 8080), ("::", 8443), ("127.0.0.1", 0)])
def test_without_an_issuer_an_unspecified_listen_address_is_a_startup_error(host, port) -> None:
    with pytest.raises(StartupError, match="SESAME_ISSUER_URL"):
        Config(listen_host=host, listen_port=port).issuer()


def test_serve_refuses_to_start_without_an_issuer_it_can_know(capsys, tmp_path) -> None:
    env = {"SESAME_DB": str(tmp_path / "cp.db"), "SESAME_LISTEN": "0.0.0.0:18099"}
    assert main(["serve"], env=env) == 2
    assert "SESAME_ISSUER_URL" in capsys.readouterr().err


def test_serve_says_which_issuer_it_chose(tmp_path) -> None:
    with control_plane_process(tmp_path / "cp.db") as cp:
        assert f"issuer URL {cp.url} (from the listen address" in cp.log_text()
    with control_plane_process(tmp_path / "cp2.db", env={"SESAME_ISSUER_URL": "https://cp.example"}) as cp:
        assert "issuer URL https://cp.example (from SESAME_ISSUER_URL)" in cp.log_text()
