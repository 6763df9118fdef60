"""Callers with no key at all cannot flood the control plane or its audit log.

Before: bad-key admin calls, anonymous token exchanges and admission reviews were never limited
and each wrote one audit row. Now a per-source token bucket answers 429 before authentication,
and denials of unauthenticated callers are aggregated: per source, reason and interval, the first
is written at once and the rest become one row with a count (the counts add up to every denial).
"""

from __future__ import annotations

import httpx
import pytest

from controlplane.clock import FakeClock
from controlplane.denials import DENIALS, DenialLog
from controlplane.source_limits import SourceLimiter, SourceLimitSettings, SourceRateLimited
from devkit.controlplane_server import running_control_plane

BURST, RATE = 20, 5.0
FLOOD = 300
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"

FLOODS = {
    "bad_admin_key": ("GET", "/v1/workloads", {"headers": {"Authorization": "Bearer ses_" + "x" * 40}}),
    "anonymous_exchange": (
        "POST",
        "/v1/token-exchange",
        {"json": {"subject_token": "not.a.jwt", "subject_token_type": JWT_TYPE, "audience": "a"}},
    ),
    "malformed_admission_review": ("POST", "/v1/admission/mutate", {"json": {"kind": "AdmissionReview"}}),
}


def _client(cp, source: str, key: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    transport = httpx.AsyncHTTPTransport(local_address=source)
    return httpx.AsyncClient(base_url=cp.url, headers=headers, transport=transport, timeout=30)


@pytest.fixture
async def limited(tmp_path, clock):
    settings = SourceLimitSettings(rate_per_second=RATE, burst=BURST)
    async with running_control_plane(tmp_path / "cp.db", clock=clock, source_limits=settings) as cp:
        yield cp


async def _audit_rows(cp) -> list[dict]:
    await cp.app[DENIALS].flush()
    async with _client(cp, "127.0.0.1", cp.owner_key) as admin:
        return (await admin.get("/v1/audit/export")).json()


@pytest.mark.parametrize("flood", sorted(FLOODS))
async def test_a_flood_from_one_source_is_limited_and_costs_a_few_audit_rows(limited, flood) -> None:
    method, path, kwargs = FLOODS[flood]
    before = len(await _audit_rows(limited))
    async with _client(limited, "127.0.0.2") as attacker:
        replies = [await attacker.request(method, path, **kwargs) for _ in range(FLOOD)]
    assert [r.status_code for r in replies].count(429) == FLOOD - BURST
    limited_reply = replies[-1]
    assert limited_reply.json()["error"] == "rate_limited" and int(limited_reply.headers["Retry-After"]) >= 1
    rows = (await _audit_rows(limited))[before:]
    assert len(rows) <= 4, [(r["type"], r["reason"], r["extra"]) for r in rows]
    assert sum(r["extra"]["count"] for r in rows) == FLOOD  # nothing lost
    assert {r["extra"]["source"] for r in rows} == {"127.0.0.2"}


async def test_another_source_is_served_during_a_flood_and_the_bucket_refills(limited, clock) -> None:
    async with (
        _client(limited, "127.0.0.2", "ses_" + "y" * 40) as attacker,
        _client(limited, "127.0.0.1", limited.owner_key) as admin,
    ):
        for _ in range(BURST + 5):
            await attacker.get("/v1/workloads")
        assert (await attacker.get("/v1/workloads")).status_code == 429
        assert (await admin.get("/v1/workloads")).status_code == 200
        assert (await admin.get("/healthz")).status_code == 200
        clock.advance(1.0)  # RATE tokens come back per second
        assert [(await attacker.get("/v1/workloads")).status_code for _ in range(6)] == [401] * 5 + [429]


async def test_denials_before_authentication_are_counted_in_metrics(limited) -> None:
    async with _client(limited, "127.0.0.3", "ses_" + "z" * 40) as attacker:
        for _ in range(BURST + 3):
            await attacker.get("/v1/targets")
        text = (await attacker.get("/metrics")).text
    metric = "sesame_unauthenticated_denials_total"
    assert f'{metric}{{reason="unauthorized",type="auth.denied"}} {BURST}.0' in text
    assert f'{metric}{{reason="rate_limited",type="request.limited"}} 3.0' in text


def test_the_limiter_holds_a_bounded_number_of_sources() -> None:
    clock = FakeClock()
    limiter = SourceLimiter(SourceLimitSettings(rate_per_second=1, burst=1, max_sources=3), clock)
    for n in range(10):
        limiter.check(f"10.0.0.{n}")
    assert len(limiter._buckets) == 3
    with pytest.raises(SourceRateLimited):
        limiter.check("10.0.0.9")


class _Recorder:
    """Stands in for the AuditWriter: collects rows (the writer itself is tested in test_audit_log)."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    async def record(self, **row) -> dict:
        self.rows.append(row)
        return row


async def test_aggregation_holds_a_bounded_number_of_keys_and_loses_no_count() -> None:
    clock, audit = FakeClock(), _Recorder()
    log = DenialLog(audit, clock, interval_seconds=60, max_keys=5)  # type: ignore[arg-type]
    for n in range(1000):
        await log.record(type="auth.denied", source=f"10.0.{n // 250}.{n % 250}", reason="unauthorized")
    await log.flush()
    sources = {r["extra"]["source"] for r in audit.rows}
    assert len(audit.rows) <= 2 * (5 + 1) and "*" in sources  # a first row and a count row per key
    assert sum(r["extra"]["count"] for r in audit.rows) == 1000
    clock.advance(61)  # a new interval writes the first denial of a key again at once
    await log.record(type="auth.denied", source="10.0.0.0", reason="unauthorized")
    assert audit.rows[-1]["extra"] == {"source": "10.0.0.0", "count": 1}
