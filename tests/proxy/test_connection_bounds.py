"""Bounds under a flood of app connections (issue 8): a legitimate request is still answered, and the
memory of a burst of slow partial heads goes back once they close. The proxy runs as a real process."""

from __future__ import annotations

import asyncio
import resource
import shutil

import httpx
import pytest

from tests.proxy.conftest import route
from tests.proxy.procs import governed_args, start_proxy_process
from tests.proxy.rawhttp import RawServer, serve_requests

pytestmark = pytest.mark.slow

PARTIAL_HEAD = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 60_000  # never finished


def _ok(*_: object) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@pytest.fixture
def many_fds() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"needs 4096 file descriptors for the test's own sockets (hard limit {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), hard))


async def _open(proxy, n: int, payload: bytes) -> list[asyncio.StreamWriter]:
    writers: list[asyncio.StreamWriter] = []
    for _ in range(n):
        try:
            _, writer = await asyncio.open_connection(*proxy.listen)
        except OSError:
            continue
        if payload:
            writer.write(payload)
        writers.append(writer)
        if len(writers) % 100 == 0:
            await asyncio.sleep(0)  # let the proxy read what was sent
    return writers


async def _legitimate(proxy, port: int) -> int:
    async with httpx.AsyncClient(proxy=proxy.url, timeout=10) as client:
        return (await client.get(f"http://127.0.0.1:{port}/v1/x")).status_code


async def test_slow_partial_heads_neither_starve_a_request_nor_keep_their_memory(
    cp, pki, token_file, many_fds
):
    up = await RawServer(lambda r, w: serve_requests(r, w, _ok)).start()
    cp.routes = [route("api", "127.0.0.1", up.port, scheme="http")]
    cp.script["aud-api"] = [("ok", "k")]
    proxy = await start_proxy_process(*governed_args(cp.url, token_file, pki))
    try:
        await proxy.wait_ready(100)
        assert await _legitimate(proxy, up.port) == 200
        await asyncio.sleep(0.2)
        base = proxy.status("VmRSS")
        writers = await _open(proxy, 1500, PARTIAL_HEAD)
        await asyncio.sleep(1.0)
        during = proxy.status("VmRSS")
        assert await _legitimate(proxy, up.port) == 200  # still answered among 1,500 slow heads
        for writer in writers:
            writer.close()
        await asyncio.sleep(1.5)
        after = proxy.status("VmRSS")
        print(f"proxy VmRSS base {base} KiB, with 1,500 partial heads {during} KiB, after {after} KiB")
        assert after - base <= 20 * 1024, (base, during, after)
    finally:
        await proxy.stop()
        await up.close()


@pytest.mark.skipif(not shutil.which("prlimit"), reason="needs prlimit (util-linux)")
async def test_idle_connections_at_the_descriptor_limit_do_not_lock_out_a_request(
    cp, pki, token_file, many_fds
):
    """With 1,024 descriptors, 1,100 idle connections: the oldest idle ones make room."""
    up = await RawServer(lambda r, w: serve_requests(r, w, _ok)).start()
    cp.routes = [route("api", "127.0.0.1", up.port, scheme="http")]
    cp.script["aud-api"] = [("ok", "k")]
    proxy = await start_proxy_process(
        *governed_args(cp.url, token_file, pki), prefix=("prlimit", "--nofile=1024:1024")
    )
    try:
        await proxy.wait_ready(100)
        writers = await _open(proxy, 1100, b"")
        await asyncio.sleep(0.5)
        assert await _legitimate(proxy, up.port) == 200
        async with httpx.AsyncClient(timeout=5) as client:
            metrics = (await client.get(proxy.admin_url + "/metrics")).text
        open_now = next(
            float(line.split()[-1]) for line in metrics.splitlines()
            if line.startswith("sesame_proxy_open_connections")
        )
        assert 0 <= open_now <= (1024 - 64) // 2  # the default cap: half the descriptors left
        for writer in writers:
            writer.close()
    finally:
        await proxy.stop()
        await up.close()
