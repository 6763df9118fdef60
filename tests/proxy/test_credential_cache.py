"""CredentialCache with an injected clock: refresh ahead, single flight, stale while down, fail closed."""

from __future__ import annotations

import asyncio
import random

import pytest

from proxy.credentials import CredentialCache
from proxy.errors import ApprovalPending, CredentialUnavailable, Denied
from proxy.metrics import Metrics
from tests.proxy.conftest import FakeClock


class Exchanges:
    """A scripted exchange function: each call pops the next outcome (a token or an exception)."""

    def __init__(self, *outcomes, lifetime: float = 100.0) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0
        self.lifetime = lifetime
        self.gate: asyncio.Event | None = None

    async def __call__(self, audience: str) -> tuple[str, float]:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome, self.lifetime


def cache(exchange: Exchanges, clock: FakeClock) -> CredentialCache:
    return CredentialCache(exchange, Metrics(), clock=clock, jitter=0.0, rng=random.Random(1))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_hundred_concurrent_cold_requests_share_one_exchange(clock):
    exchange = Exchanges("t1")
    exchange.gate = asyncio.Event()
    creds = cache(exchange, clock)
    waiters = [asyncio.create_task(creds.get("aud")) for _ in range(100)]
    await settle()
    exchange.gate.set()
    results = await asyncio.gather(*waiters)
    assert exchange.calls == 1
    assert {c.token for c in results} == {"t1"}


async def test_refreshes_in_background_after_eighty_percent_of_lifetime(clock):
    exchange = Exchanges("t1", "t2")
    creds = cache(exchange, clock)
    assert (await creds.get("aud")).token == "t1"
    clock.advance(79)
    assert (await creds.get("aud")).token == "t1"
    assert exchange.calls == 1
    clock.advance(2)  # 81 % of the lifetime: served from cache, refresh starts
    assert (await creds.get("aud")).token == "t1"
    await settle()
    assert exchange.calls == 2
    assert (await creds.get("aud")).token == "t2"


async def test_jitter_moves_refresh_earlier_but_never_past_the_fraction(clock):
    exchange = Exchanges("t1")
    creds = CredentialCache(exchange, Metrics(), clock=clock, jitter=0.1, rng=random.Random(7))
    cred = await creds.get("aud")
    assert clock.now + 72 <= cred.refresh_at <= clock.now + 80


async def test_stale_credential_serves_while_control_plane_down_then_fails_closed(clock):
    down = CredentialUnavailable("control plane unreachable")
    exchange = Exchanges("t1", down)
    creds = cache(exchange, clock)
    await creds.get("aud")
    clock.advance(90)
    assert (await creds.get("aud")).token == "t1"  # refresh fails in the background
    await settle()
    clock.advance(5)
    assert (await creds.get("aud")).token == "t1"
    clock.advance(6)  # 101 s: expired
    with pytest.raises(CredentialUnavailable):
        await creds.get("aud")


async def test_recovers_when_control_plane_returns(clock):
    exchange = Exchanges(CredentialUnavailable("down"), "t2")
    creds = cache(exchange, clock)
    with pytest.raises(CredentialUnavailable):
        await creds.get("aud")
    assert (await creds.get("aud")).token == "t2"


@pytest.mark.parametrize("denial", [Denied("policy_denied"), ApprovalPending("pending", approval_id="ap_1")])
async def test_denial_during_refresh_drops_the_cached_credential(clock, denial):
    exchange = Exchanges("t1", denial)
    creds = cache(exchange, clock)
    await creds.get("aud")
    clock.advance(85)
    await creds.get("aud")
    await settle()
    with pytest.raises(type(denial)):
        await creds.get("aud")


async def test_drop_forgets_only_the_rejected_token(clock):
    exchange = Exchanges("t1", "t2")
    creds = cache(exchange, clock)
    await creds.get("aud")
    creds.drop("aud", "other")
    assert (await creds.get("aud")).token == "t1"
    creds.drop("aud", "t1")
    assert (await creds.get("aud")).token == "t2"
