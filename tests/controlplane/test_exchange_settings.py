"""Token-exchange settings come from `serve` flags and SESAME_* env (flags win) and reach the app."""

from __future__ import annotations

import httpx
import jwt
import pytest

from controlplane.attest import TokenReviewSettings
from controlplane.config import Config
from controlplane.errors import StartupError
from controlplane.exchange_settings import ExchangeSettings
from devkit.controlplane_server import LOOPBACK_ENV, control_plane_process
from devkit.issuer import ClusterIssuer
from devkit.registry_bodies import service_account_workload

JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"


@pytest.mark.parametrize(
    ("flags", "env", "expected"),
    [
        ({}, {}, ExchangeSettings()),
        (
            {},
            {
                "SESAME_ISSUER_URL": "https://sesame.example/",
                "SESAME_KUBECONFIG": "/etc/kube/config",
                "SESAME_KUBE_CONTEXT": "prod",
                "SESAME_EXCHANGE_RATE_LIMIT": "60",
                "SESAME_APPROVAL_WINDOW": "900",
                "SESAME_ROUTES_REFRESH": "10",
                "SESAME_ATTESTATION_CACHE": "0",
                "SESAME_REGISTRY_CACHE": "2.5",
                "SESAME_KEY_PUBLICATION_DELAY": "90",
                "SESAME_AUDIENCE": "sesame-prod",
            },
            ExchangeSettings(
                issuer_url="https://sesame.example",
                audience="sesame-prod",
                rate_limit_per_minute=60,
                approval_window_seconds=900,
                routes_refresh_seconds=10,
                attestation_cache_seconds=0,
                registry_cache_seconds=2.5,
                key_publication_seconds=90,
                tokenreview=TokenReviewSettings(kubeconfig="/etc/kube/config", context="prod"),
            ),
        ),
        (
            {"issuer_url": "https://flag.example", "exchange_rate_limit": "7", "kubeconfig": "/flag"},
            {"SESAME_ISSUER_URL": "https://env.example", "SESAME_EXCHANGE_RATE_LIMIT": "60"},
            ExchangeSettings(
                issuer_url="https://flag.example",
                rate_limit_per_minute=7,
                tokenreview=TokenReviewSettings(kubeconfig="/flag"),
            ),
        ),
    ],
    ids=["defaults", "env", "flags-win"],
)
def test_exchange_settings_are_built_from_flags_over_env_over_defaults(flags, env, expected) -> None:
    assert Config.build(flags, env).exchange == expected


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SESAME_EXCHANGE_RATE_LIMIT": "lots"}, "SESAME_EXCHANGE_RATE_LIMIT"),
        ({"SESAME_EXCHANGE_RATE_LIMIT": "0"}, "rate limit per minute must be at least 1"),
        ({"SESAME_ISSUER_URL": "sesame.example"}, r"issuer URL must be an http\(s\) URL"),
        ({"SESAME_REGISTRY_CACHE": "-1"}, "registry cache seconds must not be negative"),
        ({"SESAME_KEY_PUBLICATION_DELAY": "-1"}, "key publication seconds must not be negative"),
    ],
)
def test_invalid_exchange_settings_refuse_to_start(env, message) -> None:
    with pytest.raises(StartupError, match=message):
        Config.build({}, env)


async def test_serve_flags_and_env_reach_the_running_exchange(tmp_path) -> None:
    """A real `sesame-controlplane serve`: SESAME_ISSUER_URL is the `iss` of discovery and of signed
    JWTs, and --exchange-rate-limit (a flag, over the env value) limits exchanges per workload."""
    public = "https://sesame.example.test"
    async with ClusterIssuer() as issuer:
        with control_plane_process(
            tmp_path / "cp.db",
            env={"SESAME_ISSUER_URL": public, "SESAME_EXCHANGE_RATE_LIMIT": "1000", **LOOPBACK_ENV},
            args=("--exchange-rate-limit", "2"),
        ) as cp:
            auth = {"Authorization": f"Bearer {cp.owner_key}"}
            async with httpx.AsyncClient(base_url=cp.url, headers=auth, timeout=30) as http:
                discovery = (await http.get("/.well-known/openid-configuration")).json()
                assert discovery["issuer"] == public
                assert discovery["jwks_uri"].startswith(public + "/")

                async def create(path: str, body: dict) -> dict:
                    resp = await http.post(path, json=body)
                    assert resp.status_code == 201, resp.text
                    return resp.json()

                await create("/v1/clusters", {"name": "prod", "issuer": issuer.issuer})
                wl = await create(
                    "/v1/workloads",
                    service_account_workload("checkout", namespace="shop", service_account="checkout"),
                )
                tg = await create("/v1/targets", {"name": "api", "host": "api.example", "audience": "api"})
                pv = await create(
                    "/v1/credential-providers", {"name": "jwt", "type": "signed-jwt", "config": {}}
                )
                await create(
                    "/v1/policies",
                    {
                        "workload_id": wl["id"],
                        "target_id": tg["id"],
                        "provider_id": pv["id"],
                        "effect": "allow",
                    },
                )
                body = {
                    "subject_token": issuer.mint(namespace="shop", service_account="checkout"),
                    "subject_token_type": JWT_TYPE,
                    "audience": "api",
                }
                answers = [await http.post("/v1/token-exchange", json=body) for _ in range(3)]
                assert [r.status_code for r in answers] == [200, 200, 429]
                assert answers[2].json()["error"] == "rate_limited"
                claims = jwt.decode(answers[0].json()["access_token"], options={"verify_signature": False})
                assert claims["iss"] == public
