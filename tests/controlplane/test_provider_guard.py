"""A slow or failing credential provider never serialises unrelated callers.

Before: five concurrent exchanges against a token endpoint that never answered each waited for
the previous one's 10 s fetch (11/22/33/44/55 s), and the proxy blamed the control plane.
Now: one fetch per provider and cache key, a per-call timeout (`provider_timeout`), a circuit
breaker per provider (`provider_unavailable`), and the proxy passes those codes on
(tests/proxy/test_provider_failures.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from controlplane.exchange_settings import ExchangeSettings
from controlplane.providers import GuardSettings
from tests.controlplane.exchange_support import (
    CLIENT_ID,
    CLIENT_SECRET,
    allow,
    exchange_env,
    serve_token_endpoint,
)


class HangingEndpoint:
    """A token endpoint that accepts the request and answers only when released."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        await self.release.wait()
        return web.json_response({"access_token": "late", "expires_in": 3600})


@asynccontextmanager
async def hanging_endpoint() -> AsyncIterator[HangingEndpoint]:
    endpoint = HangingEndpoint()
    app = web.Application()
    app.router.add_post("/token", endpoint.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    endpoint.url = f"http://127.0.0.1:{runner.addresses[0][1]}/token"
    try:
        yield endpoint
    finally:
        endpoint.release.set()
        await runner.cleanup()


def _oauth2(name: str, url: str, ca_pem: str | None = None, client_id: str = CLIENT_ID) -> dict:
    config = {"token_url": url, "client_id": client_id, "client_secret": CLIENT_SECRET}
    if ca_pem:
        config["ca_pem"] = ca_pem
    return {"name": name, "type": "oauth2-client-credentials", "config": config}


async def test_concurrent_callers_share_one_fetch_and_each_waits_one_timeout(tmp_path) -> None:
    settings = ExchangeSettings(providers=GuardSettings(timeout_seconds=0.5))
    async with hanging_endpoint() as slow, exchange_env(tmp_path, settings) as env:
        provider = await env.create("/v1/credential-providers", _oauth2("slow", slow.url))
        await allow(env, provider_id=provider["id"])
        other = await env.create("/v1/targets", {"name": "other", "host": "other.example"})
        await env.create(
            "/v1/policies",
            {
                "workload_id": env.workload_id,
                "target_id": other["id"],
                "provider_id": env.provider_id,
                "effect": "allow",
            },
        )
        slow_calls = [env.exchange() for _ in range(5)]
        unrelated = env.exchange(audience=other["audience"])  # a static provider: not held up
        *answers, fast = await asyncio.gather(*slow_calls, unrelated)
        assert fast.status_code == 200, fast.text
        assert [(a.status_code, a.json()["error"]) for a in answers] == [(504, "provider_timeout")] * 5
        assert slow.calls == 1  # one fetch in flight for the provider and its cache key
        denied = await env.audit(type="token.denied")
        assert {e["reason"] for e in denied} == {"provider_timeout"}


async def test_different_cache_keys_fetch_in_parallel(tmp_path) -> None:
    settings = ExchangeSettings(providers=GuardSettings(timeout_seconds=0.5))
    async with hanging_endpoint() as slow, exchange_env(tmp_path, settings) as env:
        first = await env.create("/v1/credential-providers", _oauth2("a", slow.url, client_id="a"))
        await allow(env, provider_id=first["id"])
        second = await env.create("/v1/credential-providers", _oauth2("b", slow.url, client_id="b"))
        target = await env.create("/v1/targets", {"name": "b", "host": "b.example"})
        await env.create(
            "/v1/policies",
            {
                "workload_id": env.workload_id,
                "target_id": target["id"],
                "provider_id": second["id"],
                "effect": "allow",
            },
        )
        answers = await asyncio.gather(env.exchange(), env.exchange(audience=target["audience"]))
        assert [a.json()["error"] for a in answers] == ["provider_timeout"] * 2
        assert slow.calls == 2


async def test_the_breaker_opens_after_repeated_failures_and_probes_after_the_cooldown(tmp_path) -> None:
    settings = ExchangeSettings(providers=GuardSettings(failures_to_open=3, cooldown_seconds=30))
    async with serve_token_endpoint() as upstream, exchange_env(tmp_path, settings) as env:
        provider = await env.create("/v1/credential-providers", _oauth2("up", upstream.url, upstream.ca_pem))
        await allow(env, provider_id=provider["id"])
        upstream.fail_with = 503
        for _ in range(3):
            resp = await env.exchange()
            assert (resp.status_code, resp.json()["error"]) == (503, "provider_unavailable")
        assert len(upstream.calls) == 3
        resp = await env.exchange()  # open: refused at once, the failing upstream is left alone
        assert (resp.status_code, resp.json()["error"]) == (503, "provider_unavailable")
        assert "circuit open" in resp.json()["message"] and len(upstream.calls) == 3
        env.clock.advance(31)
        assert (await env.exchange()).status_code == 503  # the half-open probe fails: open again
        assert len(upstream.calls) == 4
        assert (await env.exchange()).status_code == 503 and len(upstream.calls) == 4
        env.clock.advance(31)
        upstream.fail_with = None
        assert (await env.exchange()).status_code == 200  # the probe succeeds: closed
        assert (await env.exchange()).status_code == 200
        assert len(upstream.calls) == 5  # the second came from the provider's token cache


async def test_a_refusal_by_the_upstream_does_not_open_the_breaker(tmp_path) -> None:
    settings = ExchangeSettings(providers=GuardSettings(failures_to_open=2))
    async with serve_token_endpoint() as upstream, exchange_env(tmp_path, settings) as env:
        body = _oauth2("up", upstream.url, upstream.ca_pem)
        body["config"]["client_secret"] = "wrong"
        provider = await env.create("/v1/credential-providers", body)
        await allow(env, provider_id=provider["id"])
        for _ in range(4):
            assert (await env.exchange()).json()["error"] == "upstream_mint_failed"
        assert len(upstream.calls) == 4
