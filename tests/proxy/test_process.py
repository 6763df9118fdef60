"""The proxy as a real process: large bodies stream in bounded memory; admin endpoints; graceful quit."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.proxy.conftest import route
from tests.proxy.procs import governed_args, start_proxy_process
from tests.proxy.rawhttp import RawServer, read_head

BIG = 50 * 1024 * 1024
BLOCK = b"x" * (256 * 1024)


@pytest.fixture
async def proc_proxy(cp, pki, token_file):
    procs = []

    async def start(*extra: str):
        p = await start_proxy_process(*governed_args(cp.url, token_file, pki), *extra)
        procs.append(p)
        ready = await p.wait_ready(100)  # routes loaded
        assert ready.status_code == 200, (
            f"the proxy did not become ready in 5 s: /readyz {ready.status_code} {ready.text}; "
            f"exit code {p.proc.returncode}; stderr: {p.logs}"
        )
        return p

    yield start
    for p in procs:
        await p.stop()


async def sink_and_source(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Upload: count and discard the body. Download: stream BIG bytes."""
    for _ in range(10):
        start, headers = await read_head(reader)
        if start.startswith("PUT"):
            left = int(headers["content-length"])
            while left:
                left -= len(await reader.read(min(left, 1 << 20)))
            body = str(int(headers["content-length"])).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG)
            for _ in range(BIG // len(BLOCK)):
                writer.write(BLOCK)
                await writer.drain()
        await writer.drain()


async def test_fifty_mib_bodies_stream_without_rss_growing_accordingly(cp, proc_proxy):
    upstream = await RawServer(sink_and_source).start()
    cp.routes = [route("bulk", "127.0.0.1", upstream.port, scheme="http")]
    proxy = await proc_proxy()
    try:
        reader, writer = await asyncio.open_connection(*proxy.listen)
        base = proxy.status("VmRSS")
        head = f"PUT http://127.0.0.1:{upstream.port}/up HTTP/1.1\r\nHost: x\r\nContent-Length: {BIG}\r\n\r\n"
        writer.write(head.encode())
        for _ in range(BIG // len(BLOCK)):
            writer.write(BLOCK)
            await writer.drain()
        start, headers = await read_head(reader)
        assert start.startswith("HTTP/1.1 200")
        assert await reader.readexactly(int(headers["content-length"])) == str(BIG).encode()
        writer.write(f"GET http://127.0.0.1:{upstream.port}/down HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        start, headers = await read_head(reader)
        assert int(headers["content-length"]) == BIG
        received = 0
        while received < BIG:
            chunk = await asyncio.wait_for(reader.read(1 << 20), 20)
            assert chunk
            received += len(chunk)
        writer.close()
        peak = proxy.status("VmHWM")
        assert received == BIG
        print(f"proxy VmRSS before {base} KiB, VmHWM after 2 x 50 MiB {peak} KiB")
        assert (peak - base) * 1024 < BIG // 4, f"RSS grew from {base} KiB to a peak of {peak} KiB"
    finally:
        await upstream.close()


async def test_admin_probes_metrics_and_quitquitquit(cp, proc_proxy, http_api):
    cp.script["aud-api"] = [("ok", "sk-live-upstream-secret")]
    cp.routes = [route("api", "127.0.0.1", http_api.port, scheme="http")]
    proxy = await proc_proxy("--heartbeat-interval", "0.2", "--observations-interval", "0.2")
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(proxy.admin_url + "/healthz")).json() == {"status": "ok"}
        ready = await client.get(proxy.admin_url + "/readyz")
        assert ready.json()["checks"] == {"routes": "ok", "token": "ok"}
        via = await client.get(f"http://127.0.0.1:{http_api.port}/v1/x")
        assert via.status_code == 401  # direct call without the proxy: no key
        async with httpx.AsyncClient(proxy=proxy.url) as through:
            assert (await through.get(f"http://127.0.0.1:{http_api.port}/v1/x")).status_code == 200
        metrics = (await client.get(proxy.admin_url + "/metrics")).text
        assert 'sesame_proxy_requests_total{outcome="forwarded",target="api"} 1.0' in metrics
        assert 'sesame_proxy_credential_cache_total{result="miss"} 1.0' in metrics
        assert "sesame_proxy_exchange_seconds_count" in metrics
        quit_resp = await client.post(proxy.admin_url + "/quitquitquit")
        assert quit_resp.status_code == 200
    assert await asyncio.wait_for(proxy.proc.wait(), 15) == 0
    assert cp.heartbeats and cp.heartbeats[0]["version"]
    assert {"host": "127.0.0.1", "port": http_api.port, "count": 1, "governed": True} in cp.observations


async def test_readyz_fails_while_token_is_unreadable(cp, proc_proxy, token_file):
    proxy = await proc_proxy()
    token_file.unlink()
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.get(proxy.admin_url + "/readyz")
    assert resp.status_code == 503
    assert resp.json()["checks"]["token"] == "credential_unavailable"
