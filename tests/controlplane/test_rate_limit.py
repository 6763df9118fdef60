"""120 admin requests per minute per key; the 121st gets 429 + Retry-After, then service resumes.

The clock is injected (FakeClock): nothing sleeps.
"""

from __future__ import annotations

import pytest

from controlplane.clock import FakeClock
from controlplane.errors import RateLimited
from controlplane.ratelimit import RateLimiter
from devkit.controlplane_server import running_control_plane
from tests.controlplane.conftest import client_for


async def test_121st_request_in_a_minute_is_429_then_resumes(tmp_path):
    clock = FakeClock()
    async with running_control_plane(tmp_path / "cp.db", clock=clock) as cp:
        async with client_for(cp, cp.owner_key) as c:
            for i in range(120):
                assert (await c.get("/v1/workloads")).status_code == 200, i
                clock.advance(0.1)
            resp = await c.get("/v1/workloads")
            assert resp.status_code == 429
            assert resp.json()["error"] == "rate_limited"
            retry = int(resp.headers["Retry-After"])
            assert 1 <= retry <= 60
            assert (await c.get("/healthz")).status_code == 200  # public routes are not limited
            clock.advance(retry)
            assert (await c.get("/v1/workloads")).status_code == 200
            denied = (await c.get("/v1/audit", params={"type": "auth.denied"})).json()["events"]
            assert any(e["reason"] == "rate_limited" for e in denied)


def test_limit_is_per_key_and_sliding():
    clock = FakeClock()
    limiter = RateLimiter(limit=3, clock=clock)
    for _ in range(3):
        limiter.check("a")
    limiter.check("b")
    with pytest.raises(RateLimited) as exc:
        limiter.check("a")
    assert exc.value.retry_after == 60
    clock.advance(59.5)
    with pytest.raises(RateLimited) as exc:
        limiter.check("a")
    assert exc.value.retry_after == 1
    clock.advance(0.5)
    limiter.check("a")


async def test_limit_is_configurable(tmp_path):
    clock = FakeClock()
    async with running_control_plane(tmp_path / "cp.db", clock=clock, rate_limit_per_minute=2) as cp:
        async with client_for(cp, cp.owner_key) as c:
            assert [(await c.get("/v1/workloads")).status_code for _ in range(3)] == [200, 200, 429]
