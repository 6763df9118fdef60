"""Benchmark: token exchange throughput and latency next to a bare aiohttp handler (reported, not asserted).

The control plane (static provider, JWKS already cached, SQLite, audit committed per answer) and
a bare aiohttp app returning constant JSON each run in a child process pinned to one core; the
load generator (c32, keep-alive) runs here. Two exchange runs: one subject token reused (after the
first call it measures the verified-token cache) and --distinct pod tokens sent once each (every
one verified: signature, claims, registry), which is the work a fleet of pods really costs.
Bounded by --requests and --max-seconds. Besides
req/s it prints each server's CPU time per request (all threads, from /proc), which varies far
less than req/s on a shared machine.
Target: >= 3,000 exchanges/s and p99 <= 10 ms on distinct tokens.

    .venv/bin/python -m bench.token_exchange [--requests 5000] [--distinct 1000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from devkit.issuer import ClusterIssuer
from devkit.registry_bodies import service_account_workload

AUDIENCE = "https://bench.example"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"


def _pin_one_core() -> None:
    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cores[0]})


async def _serve_forever(app: web.Application, ports: Any, extra: dict[str, Any]) -> None:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, backlog=1024).start()
    ports.put({"port": runner.addresses[0][1], **extra})
    await asyncio.Event().wait()


def _run_controlplane(db: str, synchronous: str, ports: Any) -> None:
    from controlplane.exchange_settings import ExchangeSettings
    from controlplane.source_limits import SourceLimitSettings

    serve_controlplane(
        db,
        ports,
        sqlite_synchronous=synchronous,
        rate_limit_per_minute=10**6,
        exchange=ExchangeSettings(rate_limit_per_minute=10**7, issuer_url="http://127.0.0.1"),
        source_limits=SourceLimitSettings(rate_per_second=10**7, burst=10**7),  # one client measures
    )


def serve_controlplane(db: str, ports: Any, **config: Any) -> None:
    """In a child process: a control plane on one core with an owner key, trusting the loopback
    cluster issuer; `config` sets the other Config fields."""
    _pin_one_core()
    from controlplane.app import create_app
    from controlplane.appkeys import API_KEYS
    from controlplane.config import Config
    from controlplane.outbound import OutboundPolicy
    from controlplane.permissions import Role

    async def main() -> None:
        app = create_app(
            Config(
                db_path=Path(db),
                listen_port=0,
                kek=os.urandom(32),
                outbound=OutboundPolicy.parse("127.0.0.0/8"),  # the bench's cluster issuer
                **config,
            )
        )

        async def owner_key(app: web.Application):
            _, key = await app[API_KEYS].create(name="bench", role=Role.OWNER)
            extra["owner"] = key
            yield

        extra: dict[str, Any] = {}
        app.cleanup_ctx.append(owner_key)
        await _serve_forever(app, ports, extra)

    _run(main())


def _run_bare(ports: Any) -> None:
    _pin_one_core()

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"access_token": "x" * 32, "token_type": "Bearer", "expires_in": 300})

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/token-exchange", handler)
        await _serve_forever(app, ports, {})

    _run(main())


def _run(coro: Any) -> None:
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(coro)


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads), from /proc; None where there is none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start(target: Any, *args: Any) -> tuple[multiprocessing.Process, dict[str, Any]]:
    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, ports), daemon=True)
    proc.start()
    return proc, ports.get(timeout=60)


async def _seed(url: str, owner: str, issuer: ClusterIssuer) -> None:
    async with aiohttp.ClientSession(base_url=url, headers={"Authorization": f"Bearer {owner}"}) as http:

        async def create(path: str, body: dict[str, Any]) -> dict[str, Any]:
            async with http.post(path, json=body) as resp:
                assert resp.status == 201, await resp.text()
                return await resp.json()

        await create("/v1/clusters", {"name": "bench", "issuer": issuer.issuer})
        wl = await create(
            "/v1/workloads",
            service_account_workload("bench", namespace="bench", service_account="bench"),
        )
        tg = await create("/v1/targets", {"name": "bench", "host": "bench.example", "audience": AUDIENCE})
        cp = await create(
            "/v1/credential-providers",
            {"name": "bench", "type": "static", "config": {"value": "bench-secret"}},
        )
        await create(
            "/v1/policies",
            {"workload_id": wl["id"], "target_id": tg["id"], "provider_id": cp["id"], "effect": "allow"},
        )


async def _load(
    url: str,
    body: dict[str, Any],
    *,
    pid: int,
    requests: int,
    concurrency: int,
    max_seconds: float,
    tokens: list[str] | None = None,
) -> dict[str, float]:
    """`requests` exchanges of `body` (with `tokens`: one per token, each sent once)."""
    latencies: list[float] = []
    errors = 0
    bodies = [{**body, "subject_token": t} for t in tokens] if tokens else None
    remaining = len(bodies) if bodies else requests
    deadline = time.perf_counter() + max_seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base_url=url, connector=connector) as http:

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0 and time.perf_counter() < deadline:
                remaining -= 1
                payload = bodies[remaining] if bodies else body
                start = time.perf_counter()
                async with http.post("/v1/token-exchange", json=payload) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - start)

        for _ in range(min(200, requests)):  # warm-up: connections, caches, JWKS fetch
            async with http.post("/v1/token-exchange", json=body) as resp:
                await resp.read()
        cpu_before = _cpu_seconds(pid)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu_after = _cpu_seconds(pid)
    latencies.sort()
    cpu = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else float("nan")
    return {
        "cpu_ms": cpu * 1000 / max(1, len(latencies)),
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    }


async def _bench(args: argparse.Namespace, issuer: ClusterIssuer, db: str) -> None:
    cp_proc, cp = _start(_run_controlplane, db, args.sqlite_synchronous)
    bare_proc, bare = _start(_run_bare)
    try:
        cp_url, bare_url = f"http://127.0.0.1:{cp['port']}", f"http://127.0.0.1:{bare['port']}"
        await _seed(cp_url, cp["owner"], issuer)
        token = issuer.mint(namespace="bench", service_account="bench", ttl=3600)
        body = {"subject_token": token, "subject_token_type": JWT_TYPE, "audience": AUDIENCE}
        opts = {"requests": args.requests, "concurrency": args.concurrency, "max_seconds": args.max_seconds}
        distinct = [
            issuer.mint(namespace="bench", service_account="bench", ttl=3600, register_pod=False)
            for _ in range(args.distinct)
        ]
        reference = await _load(bare_url, body, pid=bare_proc.pid, **opts)
        exchange = await _load(cp_url, body, pid=cp_proc.pid, **opts)
        fresh = await _load(cp_url, body, pid=cp_proc.pid, tokens=distinct, **opts)
    finally:
        for proc in (cp_proc, bare_proc):
            proc.terminate()
            proc.join(timeout=10)
    print(
        f"token exchange bench: c{args.concurrency}, server pinned to one core, static provider, "
        f"SQLite synchronous={args.sqlite_synchronous}"
    )
    runs = (
        ("bare aiohttp", reference),
        ("one token", exchange),
        (f"{args.distinct} tokens", fresh),
    )
    for name, r in runs:
        print(
            f"  {name:15s} {r['rps']:9.0f} req/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms"
            f"  server CPU {r['cpu_ms']:.3f} ms/req  ({r['requests']:.0f} requests, {r['errors']:.0f} errors)"
        )
    for name, r in runs[1:]:
        print(f"  ratio {name}/bare: {r['rps'] / reference['rps']:.1%} of req/s")
    print(
        f"  distinct tokens: target >= 3000 req/s: {'met' if fresh['rps'] >= 3000 else 'NOT met'}, "
        f"p99 <= 10 ms: {'met' if fresh['p99_ms'] <= 10 else 'NOT met'}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--distinct", type=int, default=1000, help="pod tokens, each sent once")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--sqlite-synchronous", choices=("full", "normal"), default="full")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, ClusterIssuer.in_thread() as issuer:
        asyncio.run(_bench(args, issuer, str(Path(tmp) / "bench.db")))


if __name__ == "__main__":
    main()
