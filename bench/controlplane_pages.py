"""Benchmark: median latency of a workloads page and a filtered audit page (reported, not asserted).

Seeds 10k workloads and 1M audit events straight into SQLite (bounded, chained like the real
writer), starts the real control plane on that file, and times HTTP requests against it, with
/healthz measured in the same run as the reference. Target: <= 20 ms per page.

    .venv/bin/python -m bench.controlplane_pages [--workloads 10000] [--events 1000000] [--requests 200]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from controlplane.audit import event_hash
from controlplane.clock import format_ts
from controlplane.source_limits import SourceLimitSettings
from controlplane.store import SqliteStore
from controlplane.store.sql.audit import AUDIT_FIELDS, GENESIS
from devkit.controlplane_server import running_control_plane

CHUNK = 50_000
START = 1_780_000_000.0


async def seed(db: Path, workloads: int, events: int) -> tuple[list[str], str]:
    store = await SqliteStore.open(db)
    try:
        ids = [f"wl_bench{i:08d}" for i in range(workloads)]
        now = format_ts(START)
        await store.db.executemany(
            "INSERT INTO workloads (id, name, cluster, namespace, service_account, status, data, created_at,"
            " updated_at) VALUES (?, ?, NULL, 'bench', ?, 'active', ?, ?, ?)",
            (
                (
                    wid,
                    f"w{i}",
                    f"sa{i}",
                    json.dumps(
                        {
                            "name": f"w{i}",
                            "status": "active",
                            "attestation": {
                                "type": "kubernetes-service-account",
                                "namespace": "bench",
                                "service_account": f"sa{i}",
                            },
                        }
                    ),
                    now,
                    now,
                )
                for i, wid in enumerate(ids)
            ),
        )
        cols = (*AUDIT_FIELDS, "prev_hash", "hash")
        sql = f"INSERT INTO audit_events ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})"
        prev = GENESIS
        for base in range(0, events, CHUNK):
            rows = []
            for n in range(base, min(base + CHUNK, events)):
                row = {
                    "id": f"evt_{hashlib.md5(str(n).encode()).hexdigest()[:16]}",
                    "ts": format_ts(START + n * 0.5),
                    "type": "token.issued",
                    "actor": "bench",
                    "outcome": "success",
                    "workload_id": ids[n % workloads],
                    "target_service": "stripe",
                    "audience": "https://api.stripe.com",
                    "ttl_seconds": 300,
                    "reason": None,
                    "correlation_id": None,
                    "extra": None,
                    "prev_hash": prev,
                }
                row["hash"] = prev = event_hash(prev, row)
                rows.append(tuple(row[c] for c in cols))
            await store.db.executemany(sql, rows)
        async with store.db.write() as conn:
            await conn.execute("INSERT INTO meta(key, value) VALUES ('audit_head', ?)", (prev,))
        plan = await store.db.fetchall(
            "EXPLAIN QUERY PLAN SELECT * FROM audit_events WHERE workload_id = ? AND ts >= ? "
            "ORDER BY seq DESC LIMIT 101",
            ("x", "y"),
        )
        return ids, "; ".join(r["detail"] for r in plan)
    finally:
        await store.close()


async def median_ms(session: aiohttp.ClientSession, url: str, n: int, headers: dict[str, str]) -> float:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        async with session.get(url, headers=headers) as resp:
            await resp.read()
            assert resp.status == 200, resp.status
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        t0 = time.perf_counter()
        ids, plan = await seed(db, args.workloads, args.events)
        took = time.perf_counter() - t0
        print(f"seeded {args.workloads} workloads + {args.events} audit events in {took:.1f}s")
        print(f"audit query plan: {plan}")
        unlimited = SourceLimitSettings(rate_per_second=10**9, burst=10**9)  # one client measures
        async with running_control_plane(db, rate_limit_per_minute=10**9, source_limits=unlimited) as cp:
            headers = {"Authorization": f"Bearer {cp.owner_key}"}
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{cp.url}/v1/workloads?limit=100", headers=headers) as resp:
                    cursor = (await resp.json())["next_cursor"]
                wl = ids[len(ids) // 2]
                since = format_ts(START + args.events * 0.25)
                base, audit_q = cp.url, f"workload_id={wl}&since={since}&limit=100"
                cases = {
                    "reference GET /healthz": f"{cp.url}/healthz",
                    "GET /v1/workloads?limit=100 (page 2)": f"{base}/v1/workloads?limit=100&cursor={cursor}",
                    "GET /v1/audit?workload_id&since&limit=100": f"{base}/v1/audit?{audit_q}",
                }
                results = {
                    name: await median_ms(session, url, args.requests, headers) for name, url in cases.items()
                }
        ref = results["reference GET /healthz"]
        for name, ms in results.items():
            target = (
                "" if name.startswith("reference") else f"  target <= 20 ms: {'ok' if ms <= 20 else 'MISSED'}"
            )
            print(f"{name:48s} median {ms:7.2f} ms  ({ms / ref:5.1f}x reference){target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
