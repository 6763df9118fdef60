"""Two control plane replicas on one PostgreSQL behave as one system.

Real PostgreSQL (conftest `postgres`), real control planes on port 0 sharing one database and one
KEK (in-process, plus one `sesame-controlplane serve` subprocess for kill -9), a real cluster
issuer. Every load loop is bounded in count; nothing asserts on timing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import asyncpg
import httpx
import jwt
import pytest

from controlplane.appkeys import AUDIT
from controlplane.clock import FakeClock
from controlplane.exchange_settings import ExchangeSettings
from controlplane.source_limits import SourceLimitSettings
from devkit.controlplane_server import (
    LOOPBACK,
    ControlPlane,
    control_plane_process,
    new_kek,
    running_control_plane,
)
from devkit.issuer import ClusterIssuer
from devkit.registry_bodies import service_account_workload
from tests.controlplane.conftest import TEST_RATE_LIMIT, client_for

JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ISSUER_URL = "https://sesame.test"
JWT_AUDIENCE = "https://jwt.example"
STATIC_AUDIENCE = "https://static.example"
# Every client here is 127.0.0.1: the per-source limit (not under test) must not answer for the
# limits that are. The cluster issuer listens on loopback, which outbound fetches may not reach
# unless allow-listed.
SOURCE_LIMIT = {"rate_per_second": 100_000.0, "burst": 100_000}
REPLICA_CONFIG = {"outbound": LOOPBACK, "source_limits": SourceLimitSettings(**SOURCE_LIMIT)}


@asynccontextmanager
async def replicas(pg_dsn: str, tmp_path, n: int = 2, **config: Any) -> AsyncIterator[list[ControlPlane]]:
    """`n` in-process replicas on one database with one KEK (each with its own owner key)."""
    kek = new_kek()
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                running_control_plane(
                    tmp_path / f"unused-{i}.db", db_dsn=pg_dsn, kek=kek, **REPLICA_CONFIG, **config
                )
            )
            for i in range(n)
        ]


async def query(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def assert_one_chain(admin: httpx.AsyncClient, dsn: str) -> list[asyncpg.Record]:
    """The audit log is one hash chain: verified, no row left out, no two rows on one parent."""
    rows = await query(dsn, "SELECT correlation_id, type, prev_hash, hash FROM audit_events ORDER BY seq")
    result = (await admin.get("/v1/audit/verify")).json()
    assert result["ok"] is True and result["checked"] == len(rows), result
    parents = Counter(r["prev_hash"] for r in rows)
    assert max(parents.values()) == 1, "a fork: two rows chained to one parent"
    [head] = await query(dsn, "SELECT value FROM meta WHERE key = 'audit_head'")
    assert head["value"] == rows[-1]["hash"]
    return rows


def audited(rows: list[asyncpg.Record]) -> Counter[tuple[str, str]]:
    return Counter((r["correlation_id"], r["type"]) for r in rows)


async def test_concurrent_writes_on_two_replicas_keep_one_chain_and_every_acknowledged_change(
    pg_dsn, tmp_path
):
    async with (
        replicas(pg_dsn, tmp_path, rate_limit_per_minute=TEST_RATE_LIMIT) as (a, b),
        client_for(a, a.owner_key) as on_a,
        client_for(b, a.owner_key) as on_b,  # API keys live in the shared database
    ):

        async def send(client, method: str, path: str, rid: str, body: dict) -> httpx.Response:
            return await client.request(method, path, json=body, headers={"X-Request-Id": rid})

        n = 40
        created = await asyncio.gather(
            *(
                send(
                    (on_a, on_b)[i % 2],
                    "POST",
                    "/v1/targets",
                    f"c{i}",
                    {"name": f"t{i}", "host": f"t{i}.example"},
                )
                for i in range(n)
            )
        )
        assert [r.status_code for r in created] == [201] * n
        ids = [r.json()["id"] for r in created]

        async def burst(cp: ControlPlane) -> None:  # audit rows racing the registry's for the chain
            await asyncio.gather(
                *(cp.app[AUDIT].record(type="burst", actor="t", outcome="success") for _ in range(100))
            )

        ports, hosts, *_ = await asyncio.gather(
            asyncio.gather(
                *(
                    send(on_a, "PATCH", f"/v1/targets/{id}", f"p{i}", {"port": 8443})
                    for i, id in enumerate(ids)
                )
            ),
            asyncio.gather(
                *(
                    send(on_b, "PATCH", f"/v1/targets/{id}", f"h{i}", {"host": f"new{i}.example"})
                    for i, id in enumerate(ids)
                )
            ),
            burst(a),
            burst(b),
        )
        stored = {t["id"]: t for t in (await on_a.get("/v1/targets", params={"limit": 100})).json()["data"]}
        conflicts = 0
        for i, id in enumerate(ids):
            statuses = (ports[i].status_code, hosts[i].status_code)
            assert set(statuses) <= {200, 409} and statuses != (409, 409), statuses
            conflicts += statuses.count(409)
            if statuses[0] == 200:
                assert stored[id]["port"] == 8443
            if statuses[1] == 200:
                assert stored[id]["host"] == f"new{i}.example"

        rows = await assert_one_chain(on_a, pg_dsn)
        events = audited(rows)
        acknowledged = [(f"c{i}", "target.created") for i in range(n)]
        acknowledged += [(f"p{i}", "target.updated") for i in range(n) if ports[i].status_code == 200]
        acknowledged += [(f"h{i}", "target.updated") for i in range(n) if hosts[i].status_code == 200]
        assert all(events[op] == 1 for op in acknowledged)
        assert sum(1 for r in rows if r["type"] == "target.updated") == 2 * n - conflicts
        assert events[(None, "burst")] == 200


async def setup_exchange(admin: httpx.AsyncClient, issuer: ClusterIssuer) -> None:
    """A cluster, a workload, and two allowed targets: one with a signed JWT, one with a static key."""

    async def create(path: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = await admin.post(path, json=body)
        assert resp.status_code == 201, resp.text
        return resp.json()

    await create("/v1/clusters", {"name": "prod", "issuer": issuer.issuer})
    workload = await create(
        "/v1/workloads",
        service_account_workload("app", namespace="shop", service_account="app", cluster="prod"),
    )
    for name, audience, provider in (
        ("jwt", JWT_AUDIENCE, {"type": "signed-jwt", "config": {}}),
        ("static", STATIC_AUDIENCE, {"type": "static", "config": {"value": "sk_static_0123456789"}}),
    ):
        target = await create("/v1/targets", {"name": name, "host": f"{name}.example", "audience": audience})
        cp = await create("/v1/credential-providers", {"name": name, **provider})
        await create(
            "/v1/policies",
            {
                "workload_id": workload["id"],
                "target_id": target["id"],
                "provider_id": cp["id"],
                "effect": "allow",
            },
        )


def exchanger(cp: ControlPlane, issuer: ClusterIssuer):
    client = httpx.AsyncClient(base_url=cp.url, timeout=30)

    async def exchange(audience: str) -> httpx.Response:
        token = issuer.mint(namespace="shop", service_account="app", audience="sesame")
        body = {"subject_token": token, "subject_token_type": JWT_TYPE, "audience": audience}
        return await client.post("/v1/token-exchange", json=body)

    return client, exchange


@pytest.mark.parametrize("delay", [0.0, 0.5], ids=["no-publication-delay", "publication-delay"])
async def test_rotation_on_one_replica_never_breaks_verification_against_the_other(pg_dsn, tmp_path, delay):
    settings = ExchangeSettings(issuer_url=ISSUER_URL, key_publication_seconds=delay)
    async with (
        ClusterIssuer() as issuer,
        replicas(pg_dsn, tmp_path, rate_limit_per_minute=TEST_RATE_LIMIT, exchange=settings) as (a, b),
        client_for(a, a.owner_key) as admin,
    ):
        await setup_exchange(admin, issuer)
        (http_a, exchange_a), (http_b, exchange_b) = exchanger(a, issuer), exchanger(b, issuer)
        async with http_a, http_b:
            # Both replicas sign their first credential at the same moment: one key for both.
            first = await asyncio.gather(exchange_a(JWT_AUDIENCE), exchange_b(JWT_AUDIENCE))
            assert [r.status_code for r in first] == [200, 200]
            assert len({jwt.get_unverified_header(r.json()["access_token"])["kid"] for r in first}) == 1
            states = [r["state"] for r in await query(pg_dsn, "SELECT state FROM signing_keys")]
            assert states == ["active"]

            # A verifier may cache the JWKS for less than the publication delay (0: fetch each time);
            # its age counts from before the fetch, and leaves the delay ample room on a busy machine.
            cached: dict[str, tuple[float, jwt.PyJWKSet]] = {}

            async def other_jwks(http: httpx.AsyncClient) -> jwt.PyJWKSet:
                at, keys = cached.get(str(http.base_url), (float("-inf"), None))
                if keys is None or time.monotonic() - at >= delay / 4:
                    at = time.monotonic()
                    keys = jwt.PyJWKSet.from_dict((await http.get("/v1/jwks")).json())
                    cached[str(http.base_url)] = (at, keys)
                return keys

            rotations, failures, kids = 4, [], set()
            rotated, round_done, verified = asyncio.Event(), asyncio.Event(), asyncio.Event()
            rounds = 0

            async def after_rounds(n: int) -> None:
                target = rounds + n
                while rounds < target and not verified.is_set():
                    round_done.clear()
                    await round_done.wait()

            async def rotate() -> None:  # every key signs for at least two rounds of verification
                for _ in range(rotations):
                    await after_rounds(2)
                    resp = await admin.post("/v1/keys/rotate")
                    assert resp.status_code == 200, resp.text
                    await asyncio.sleep(delay * 1.2)  # until the rotated key signs
                await after_rounds(2)
                rotated.set()

            async def verify() -> None:
                nonlocal rounds
                while not rotated.is_set() and rounds < 400:
                    for exchange, verifier in ((exchange_a, http_b), (exchange_b, http_a)):
                        issued = await exchange(JWT_AUDIENCE)
                        assert issued.status_code == 200, issued.text
                        token = issued.json()["access_token"]
                        kid = jwt.get_unverified_header(token)["kid"]
                        kids.add(kid)
                        try:
                            key = (await other_jwks(verifier))[kid].key
                            jwt.decode(
                                token, key, algorithms=["ES256"], audience=JWT_AUDIENCE, issuer=ISSUER_URL
                            )
                        except (KeyError, jwt.PyJWTError) as exc:
                            failures.append(repr(exc))
                    rounds += 1
                    round_done.set()
                verified.set()
                round_done.set()

            await asyncio.gather(rotate(), verify())
            assert failures == []
            assert len(kids) == rotations + 1 and rounds >= 2 * (rotations + 1)
            states = Counter(r["state"] for r in await query(pg_dsn, "SELECT state FROM signing_keys"))
            assert states["active"] == 1 and states["retired"] == rotations


async def test_the_admin_and_exchange_rate_limits_are_shared_by_the_replicas(pg_dsn, tmp_path):
    clock = FakeClock()
    settings = ExchangeSettings(rate_limit_per_minute=10)
    async with (
        ClusterIssuer(clock=clock.time) as issuer,
        replicas(pg_dsn, tmp_path, clock=clock, exchange=settings) as (a, b),  # admin limit: default 120
        client_for(a, a.owner_key) as owner,
    ):
        await setup_exchange(owner, issuer)
        created = await owner.post("/v1/api-keys", json={"name": "ops", "role": "admin"})
        key = created.json()["key"]
        async with client_for(a, key) as on_a, client_for(b, key) as on_b:
            statuses = [(await (on_a, on_b)[i % 2].get("/v1/workloads")).status_code for i in range(200)]
            assert Counter(statuses) == {200: 120, 429: 80}
            assert statuses[:120] == [200] * 120  # the documented figure, whichever replica answers
            refused = await on_b.get("/v1/workloads")
            assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60
            clock.advance(60)
            assert (await on_b.get("/v1/workloads")).status_code == 200

        (http_a, exchange_a), (http_b, exchange_b) = exchanger(a, issuer), exchanger(b, issuer)
        async with http_a, http_b:
            statuses = [
                (await (exchange_a, exchange_b)[i % 2](STATIC_AUDIENCE)).status_code for i in range(30)
            ]
            assert Counter(statuses) == {200: 10, 429: 20}
            denied = await query(
                pg_dsn,
                "SELECT count(*) AS n FROM audit_events WHERE type = $1 AND reason = $2",
                "token.denied",
                "rate_limited",
            )
            assert denied[0]["n"] == 20


async def test_a_failing_shared_counter_fails_open_for_admins_and_closed_for_workloads(
    pg_dsn, tmp_path, caplog
):
    async with (
        ClusterIssuer() as issuer,
        replicas(pg_dsn, tmp_path, n=1) as (a,),
        client_for(a, a.owner_key) as admin,
    ):
        await setup_exchange(admin, issuer)
        await query(pg_dsn, "DROP TABLE rate_limits")  # the counter now fails on every check
        http, exchange = exchanger(a, issuer)
        async with http:
            with caplog.at_level(logging.WARNING, logger="controlplane.ratelimit"):
                assert (await admin.get("/v1/workloads")).status_code == 200
                refused = await exchange(STATIC_AUDIENCE)
            assert refused.status_code == 503 and refused.json()["error"] == "rate_limit_unavailable"
            assert any("admin rate limit unavailable (fail_open)" in r.message for r in caplog.records)
            assert any("exchange rate limit unavailable (fail_closed)" in r.message for r in caplog.records)
            metrics = (await http.get("/metrics")).text
            assert 'sesame_rate_limit_failures_total{limiter="admin",outcome="fail_open"} 1.0' in metrics
            assert 'sesame_rate_limit_failures_total{limiter="exchange",outcome="fail_closed"} 1.0' in metrics
            [denied] = (await admin.get("/v1/audit", params={"type": "token.denied"})).json()["events"]
            assert denied["reason"] == "rate_limit_unavailable"


async def test_kill_9_of_a_replica_mid_load_loses_nothing_acknowledged(pg_dsn, tmp_path):
    kek = new_kek()
    with control_plane_process(
        tmp_path / "b.db",
        kek=kek,
        db_dsn=pg_dsn,
        env={
            "SESAME_RATE_LIMIT": str(TEST_RATE_LIMIT),
            "SESAME_SOURCE_RATE": str(SOURCE_LIMIT["rate_per_second"]),
            "SESAME_SOURCE_BURST": str(SOURCE_LIMIT["burst"]),
        },
    ) as b:
        async with (
            running_control_plane(
                tmp_path / "a.db",
                db_dsn=pg_dsn,
                kek=kek,
                rate_limit_per_minute=TEST_RATE_LIMIT,
                **REPLICA_CONFIG,
            ) as a,
            client_for(a, a.owner_key) as on_a,
            client_for(a, a.owner_key) as on_b,
        ):
            on_b.base_url = httpx.URL(b.url)
            acked: list[tuple[str, str, str, int]] = []  # (request id, audit type, target name, port)
            killed, b_loaded = asyncio.Event(), asyncio.Event()

            async def worker(client: httpx.AsyncClient, name: str) -> None:
                for i in range(150):  # bounded; stops earlier once enough happened around the kill
                    target, port = f"{name}-{i}", 1000 + i
                    try:
                        resp = await client.post(
                            "/v1/targets",
                            json={"name": target, "host": f"{target}.example", "port": port},
                            headers={"X-Request-Id": f"{target}-c"},
                        )
                        if resp.status_code != 201:
                            raise AssertionError(resp.text)
                        acked.append((f"{target}-c", "target.created", target, port))
                        resp = await client.patch(
                            f"/v1/targets/{resp.json()['id']}",
                            json={"port": port + 1},
                            headers={"X-Request-Id": f"{target}-p"},
                        )
                        if resp.status_code != 200:
                            raise AssertionError(resp.text)
                        acked.append((f"{target}-p", "target.updated", target, port + 1))
                        if sum(1 for op in acked if op[0].startswith("b")) >= 40:
                            b_loaded.set()
                    except httpx.TransportError:
                        assert client is on_b and killed.is_set()  # only the killed replica may drop requests
                        return
                    if client is on_a and killed.is_set() and i >= 60:
                        return

            async def kill_b_mid_load() -> None:
                await b_loaded.wait()
                killed.set()
                b.process.kill()  # SIGKILL: no shutdown, open transactions die with their connections

            await asyncio.gather(
                *(worker(c, f"{n}{w}") for c, n in ((on_a, "a"), (on_b, "b")) for w in range(3)),
                kill_b_mid_load(),
            )
            assert b.process.wait(timeout=10) == -9

            stored = {}
            cursor = None
            while True:
                page = (
                    await on_a.get(
                        "/v1/targets", params={"limit": 100, **({"cursor": cursor} if cursor else {})}
                    )
                ).json()
                stored.update({t["name"]: t["port"] for t in page["data"]})
                if not (cursor := page["next_cursor"]):
                    break
            for _, kind, target, port in acked:  # every acknowledged write is stored (or superseded)
                assert target in stored and stored[target] >= port, (kind, target)
            events = audited(await assert_one_chain(on_a, pg_dsn))
            assert all(events[(rid, kind)] == 1 for rid, kind, _, _ in acked)
            assert {op[0][0] for op in acked} == {"a", "b"}
