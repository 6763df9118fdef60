"""Benchmark: an unauthenticated flood against the control plane (reported, not asserted).

One source address (127.0.0.2) sends --flood bad requests at c32: bad admin keys, anonymous token
exchanges with a garbage token, malformed admission reviews. Meanwhile a legitimate workload
(127.0.0.1) exchanges its token at --rate per second. Reported: audit rows added per 10,000 bad
requests (after one aggregation interval, so the count rows are in), the database growth, and the
legitimate exchange p99 during the flood next to the p99 of the same load without a flood,
measured in the same run. The control plane runs with its default per-source limits, pinned to
one core.

    .venv/bin/python -m bench.auth_flood [--flood 10000] [--rate 40] [--quiet-seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.token_exchange import AUDIENCE, JWT_TYPE, _seed, _start, serve_controlplane
from devkit.issuer import ClusterIssuer

DENIAL_INTERVAL_SECONDS = 5.0
BAD_KEY = "ses_" + "x" * 40


def _run_controlplane(db: str, ports: Any) -> None:
    from controlplane.exchange_settings import ExchangeSettings
    from controlplane.source_limits import SourceLimitSettings

    serve_controlplane(  # the default per-source limits
        db,
        ports,
        exchange=ExchangeSettings(issuer_url="http://127.0.0.1"),
        source_limits=SourceLimitSettings(denial_interval_seconds=DENIAL_INTERVAL_SECONDS),
    )


def _session(source: str, limit: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit, local_addr=(source, 0)))


async def _legitimate(url: str, body: dict[str, Any], rate: float, stop: asyncio.Event) -> list[float]:
    """Exchanges at `rate` per second until `stop`; the latency of each (ms)."""
    latencies: list[float] = []
    async with _session("127.0.0.1", 4) as http:
        while not stop.is_set():
            start = time.perf_counter()
            async with http.post(f"{url}/v1/token-exchange", json=body) as resp:
                await resp.read()
                assert resp.status == 200, resp.status
            latencies.append((time.perf_counter() - start) * 1000)
            await asyncio.sleep(max(0.0, 1 / rate - (time.perf_counter() - start)))
    return latencies


async def _flood(url: str, count: int) -> dict[int, int]:
    """`count` bad requests at c32 from 127.0.0.2; answers by status."""
    kinds = [
        ("GET", "/v1/workloads", {"headers": {"Authorization": f"Bearer {BAD_KEY}"}}),
        (
            "POST",
            "/v1/token-exchange",
            {"json": {"subject_token": "x.y.z", "subject_token_type": JWT_TYPE, "audience": AUDIENCE}},
        ),
        ("POST", "/v1/admission/mutate", {"json": {"kind": "AdmissionReview"}}),
    ]
    statuses: dict[int, int] = {}
    remaining = count
    async with _session("127.0.0.2", 32) as http:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                method, path, kwargs = kinds[remaining % len(kinds)]
                async with http.request(method, f"{url}{path}", **kwargs) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1

        await asyncio.gather(*(worker() for _ in range(32)))
    return statuses


async def _audit_rows(url: str, owner: str) -> int:
    async with _session("127.0.0.1", 1) as http:
        headers = {"Authorization": f"Bearer {owner}"}
        async with http.get(f"{url}/v1/audit/export", headers=headers) as resp:
            return len(await resp.json())


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def _bench(args: argparse.Namespace, issuer: ClusterIssuer, db: str) -> None:
    proc, cp = _start(_run_controlplane, db)
    try:
        url = f"http://127.0.0.1:{cp['port']}"
        await _seed(url, cp["owner"], issuer)
        token = issuer.mint(namespace="bench", service_account="bench", ttl=3600)
        body = {"subject_token": token, "subject_token_type": JWT_TYPE, "audience": AUDIENCE}

        stop = asyncio.Event()
        quiet_task = asyncio.create_task(_legitimate(url, body, args.rate, stop))
        await asyncio.sleep(args.quiet_seconds)
        stop.set()
        quiet = await quiet_task

        await asyncio.sleep(DENIAL_INTERVAL_SECONDS + 1)
        rows_before, size_before = await _audit_rows(url, cp["owner"]), _db_bytes(db)
        stop = asyncio.Event()
        loud_task = asyncio.create_task(_legitimate(url, body, args.rate, stop))
        started = time.perf_counter()
        statuses = await _flood(url, args.flood)
        took = time.perf_counter() - started
        stop.set()
        loud = await loud_task
        await asyncio.sleep(DENIAL_INTERVAL_SECONDS + 1)  # the aggregated count rows are written
        legit_rows = len(loud)  # each legitimate exchange writes its own token.issued row
        rows_added = await _audit_rows(url, cp["owner"]) - rows_before - legit_rows
        size_added = _db_bytes(db) - size_before
    finally:
        proc.terminate()
        proc.join(timeout=10)
    per_10k = rows_added * 10_000 / args.flood
    print(
        f"auth flood bench: {args.flood} bad requests at c32 from one address in {took:.1f} s; "
        f"legitimate exchanges at {args.rate:g}/s from another; server pinned to one core"
    )
    print(f"  answers to the flood: {dict(sorted(statuses.items()))}")
    print(
        f"  audit rows added by the flood: {rows_added} ({per_10k:.1f} per 10,000 bad requests); "
        f"database growth {size_added / 1024:.0f} KiB (with {legit_rows} legitimate rows)"
    )
    print(
        f"  legitimate exchange p50/p99 without flood: {statistics.median(quiet):.2f} / {_p99(quiet):.2f} ms "
        f"({len(quiet)} exchanges)"
    )
    print(
        f"  legitimate exchange p50/p99 during flood:  {statistics.median(loud):.2f} / {_p99(loud):.2f} ms "
        f"({len(loud)} exchanges; ratio of p99 {_p99(loud) / _p99(quiet):.2f}x)"
    )


def _db_bytes(db: str) -> int:
    path = Path(db)
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flood", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=40.0, help="legitimate exchanges per second")
    parser.add_argument("--quiet-seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, ClusterIssuer.in_thread() as issuer:
        asyncio.run(_bench(args, issuer, str(Path(tmp) / "bench.db")))


if __name__ == "__main__":
    main()
