"""The exchange's registry cache: a write in this process takes effect at the next exchange; a write
by another replica (another connection to the same database) is seen once the cache lifetime passes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from controlplane.exchange_settings import DEFAULT_REGISTRY_CACHE_SECONDS, ExchangeSettings
from controlplane.store import open_store
from tests.controlplane.exchange_support import STATIC_SECRET, Env, allow, exchange_env


@pytest.fixture
async def env(tmp_path) -> AsyncIterator[Env]:
    async with exchange_env(tmp_path, ExchangeSettings()) as env:
        yield env


async def status_and_error(env: Env) -> tuple[int, str | None]:
    resp = await env.exchange()
    return resp.status_code, resp.json().get("error")


async def test_revoking_a_workload_takes_effect_at_the_next_exchange(env: Env) -> None:
    await allow(env)
    assert await status_and_error(env) == (200, None)  # workload, target, policy, provider now cached
    await env.admin.patch(f"/v1/workloads/{env.workload_id}", json={"status": "revoked"})
    assert await status_and_error(env) == (403, "workload_revoked")
    await env.admin.patch(f"/v1/workloads/{env.workload_id}", json={"status": "active"})
    assert await status_and_error(env) == (200, None)


async def test_deleting_a_policy_takes_effect_at_the_next_exchange(env: Env) -> None:
    policy = await allow(env)
    assert await status_and_error(env) == (200, None)
    assert (await env.admin.delete(f"/v1/policies/{policy['id']}")).status_code == 204
    assert await status_and_error(env) == (403, "policy_denied")


async def test_a_rotated_secret_is_served_at_the_next_exchange(env: Env) -> None:
    await allow(env)
    assert (await env.exchange()).json()["access_token"] == STATIC_SECRET
    rotated = await env.admin.post(
        f"/v1/credential-providers/{env.provider_id}/rotate", json={"config": {"value": "sk_live_rotated"}}
    )
    assert rotated.status_code == 200, rotated.text
    assert (await env.exchange()).json()["access_token"] == "sk_live_rotated"


async def test_a_deleted_cluster_stops_vouching_for_already_verified_tokens(env: Env) -> None:
    await allow(env)
    token = env.token()
    assert (await env.exchange(token)).status_code == 200  # the verified token is cached too
    assert (await env.admin.delete(f"/v1/clusters/{env.cluster_id}")).status_code == 204
    refused = await env.exchange(token)
    assert (refused.status_code, refused.json()["reason"]) == (401, "unknown_issuer")


async def test_writes_of_another_replica_are_seen_within_the_cache_lifetime(env: Env, tmp_path) -> None:
    await allow(env)
    assert await status_and_error(env) == (200, None)
    other = await open_store(tmp_path / "cp.db")  # another replica's connection to the same database
    try:
        changed = await other.registry.update(
            "workloads", env.workload_id, {"status": "revoked"}, now="2026-01-01T00:00:00Z"
        )
        assert changed is not None
    finally:
        await other.close()
    assert await status_and_error(env) == (200, None)  # this replica's cache has not expired yet
    env.clock.advance(DEFAULT_REGISTRY_CACHE_SECONDS + 1)
    assert await status_and_error(env) == (403, "workload_revoked")


@pytest.mark.parametrize("settings", [ExchangeSettings(registry_cache_seconds=0)])
async def test_a_zero_cache_lifetime_reads_the_database_every_time(tmp_path, settings) -> None:
    async with exchange_env(tmp_path, settings) as env:
        await allow(env)
        assert await status_and_error(env) == (200, None)
        other = await open_store(tmp_path / "cp.db")
        try:
            await other.registry.update(
                "workloads", env.workload_id, {"status": "revoked"}, now="2026-01-01T00:00:00Z"
            )
        finally:
            await other.close()
        assert await status_and_error(env) == (403, "workload_revoked")
