"""The destination rule, attacked from inside the pod: a credential reaches only its route's host.

Each test is an attack that worked against the earlier two-forwarder proxy (issue 8); the
transparent-mode one runs in network namespaces (tests/proxy/test_transparent_mode.py).
"""

from __future__ import annotations

import asyncio
import json
import ssl

import httpx

from tests.proxy.conftest import API_KEY, client_ssl, proxy_url, route
from tests.proxy.rawhttp import RawServer, read_head, read_message, serve_requests


def ok(body: bytes = b"ok") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


class Recorder:
    """A raw upstream that answers 200 and records every request it gets (start line, headers)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str], bytes]] = []
        self.server: RawServer | None = None

    async def start(self) -> Recorder:
        def respond(start: str, headers: dict, body: bytes) -> bytes:
            self.seen.append((start, headers, body))
            return ok()

        self.server = await RawServer(lambda r, w: serve_requests(r, w, respond)).start()
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()


async def _raw(proxy, data: bytes) -> tuple[str, dict[str, str], bytes]:
    host, port = proxy.listener.address
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(data)
    try:
        return await asyncio.wait_for(read_message(reader), 10)
    finally:
        writer.close()


async def test_absolute_form_host_field_is_replaced_by_the_target_authority(cp, start_proxy):
    api = await Recorder().start()
    cp.script["aud-api"] = [("ok", API_KEY)]
    cp.routes = [route("api", "127.0.0.1", api.port, scheme="http")]
    proxy = await start_proxy()
    try:
        start, _, body = await _raw(
            proxy,
            f"GET http://127.0.0.1:{api.port}/v1/x HTTP/1.1\r\nHost: evil.example\r\n\r\n".encode(),
        )
        assert start.startswith("HTTP/1.1 200"), body
        line, headers, _ = api.seen[-1]
        assert line == "GET /v1/x HTTP/1.1"
        assert headers["host"] == f"127.0.0.1:{api.port}"  # never the virtual host the app named
        assert headers["authorization"] == f"Bearer {API_KEY}"
    finally:
        await api.close()


async def test_host_naming_another_authority_inside_intercepted_tls_is_421(cp, start_proxy, https_api, pki):
    cp.script["aud-api"] = [("ok", API_KEY)]
    cp.routes = [route("api", "localhost", https_api.port)]
    proxy = await start_proxy()
    async with httpx.AsyncClient(proxy=proxy_url(proxy), verify=client_ssl(pki), timeout=10) as client:
        resp = await client.get(
            f"https://localhost:{https_api.port}/v1/hello", headers={"Host": "evil.example"}
        )
        assert resp.status_code == 421
        assert resp.json()["error"] == "misdirected_request"
        good = await client.get(f"https://localhost:{https_api.port}/v1/hello")
        assert good.status_code == 200
    assert len(https_api.seen) == 1 and https_api.seen[0].authorized  # only the good request arrived


async def test_request_without_host_inside_intercepted_tls_is_400(cp, start_proxy, https_api, pki):
    cp.script["aud-api"] = [("ok", API_KEY)]
    cp.routes = [route("api", "localhost", https_api.port)]
    proxy = await start_proxy()
    host, port = proxy.listener.address
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"CONNECT localhost:{https_api.port} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    start, _ = await read_head(reader)
    assert start.startswith("HTTP/1.1 200")
    await writer.start_tls(client_ssl(pki), server_hostname="localhost")
    writer.write(b"GET /v1/hello HTTP/1.1\r\n\r\n")
    start, _headers, body = await asyncio.wait_for(read_message(reader), 10)
    writer.close()
    assert start.startswith("HTTP/1.1 400")
    assert json.loads(body)["error"] == "bad_request"
    assert https_api.seen == []


async def test_token_with_crlf_is_never_written_into_a_request(cp, start_proxy):
    api = await Recorder().start()
    cp.script["aud-api"] = [("ok", "abc\r\nX-Injected-By-Token: 1")]
    cp.routes = [route("api", "127.0.0.1", api.port, scheme="http")]
    proxy = await start_proxy()
    try:
        async with httpx.AsyncClient(proxy=proxy_url(proxy), timeout=10) as client:
            resp = await client.get(f"http://127.0.0.1:{api.port}/v1/x")
        assert resp.status_code == 502
        assert resp.json()["error"] == "invalid_credential"
        assert api.seen == []
    finally:
        await api.close()


async def test_route_whose_prefix_holds_crlf_is_refused(cp, start_proxy):
    api = await Recorder().start()
    cp.script["aud-api"] = [("ok", API_KEY)]
    bad = route("api", "127.0.0.1", api.port, scheme="http",
                injection={"type": "header", "name": "X-Key", "prefix": "k\r\nX-Evil: 1\r\n"})
    cp.routes = [bad]
    proxy = await start_proxy()
    try:
        assert len(proxy.routes.table) == 0  # skipped as malformed: nothing is injected from it
        async with httpx.AsyncClient(proxy=proxy_url(proxy), timeout=10) as client:
            await client.get(f"http://127.0.0.1:{api.port}/v1/x")
        assert "x-evil" not in api.seen[-1][1] and "x-key" not in api.seen[-1][1]
        assert cp.exchanges == []
    finally:
        await api.close()


async def test_upstream_closing_on_a_chunked_request_is_a_502_not_a_dropped_connection(cp, start_proxy):
    async def close_after_head(reader, writer):
        await read_head(reader)  # then close without answering

    up = await RawServer(close_after_head).start()
    cp.script["aud-api"] = [("ok", API_KEY)]
    cp.routes = [route("api", "127.0.0.1", up.port, scheme="http")]
    proxy = await start_proxy()
    try:
        start, _, body = await _raw(
            proxy,
            f"POST http://127.0.0.1:{up.port}/up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            "5\r\nhello\r\n0\r\n\r\n".encode(),
        )
        assert start.startswith("HTTP/1.1 502")
        assert json.loads(body)["error"] == "upstream_unreachable"
    finally:
        await up.close()


async def test_stale_pooled_connection_is_retried_once_on_a_fresh_one(cp, start_proxy):
    """The upstream closes each kept-alive connection right after its response (without saying so):
    the next request, a chunked one sent on the pooled connection, is replayed on a new connection."""
    served = []

    async def one_then_close(reader, writer):
        _start, _headers, body = await read_message(reader)
        served.append(body)
        writer.write(ok())
        await writer.drain()

    up = await RawServer(one_then_close).start()
    cp.script["aud-api"] = [("ok", API_KEY)]
    cp.routes = [route("api", "127.0.0.1", up.port, scheme="http")]
    proxy = await start_proxy()
    host, port = proxy.listener.address
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for i in range(3):
            writer.write(
                f"POST http://127.0.0.1:{up.port}/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                f"1\r\n{i}\r\n0\r\n\r\n".encode()
            )
            start, _, _ = await asyncio.wait_for(read_message(reader), 10)
            assert start.startswith("HTTP/1.1 200"), start
            await asyncio.sleep(0.05)  # let the close reach the pooled connection
        assert served == [b"0", b"1", b"2"]
        assert up.connections == 3
    finally:
        writer.close()
        await up.close()


async def test_connect_to_an_ungoverned_host_is_tunneled_with_the_real_certificate(
    cp, start_proxy, https_api, pki
):
    cp.routes = []
    proxy = await start_proxy()
    ctx = ssl.create_default_context(cafile=str(pki.dev_ca_file))  # the real certificate only
    async with httpx.AsyncClient(proxy=proxy_url(proxy), verify=ctx, timeout=10) as client:
        resp = await client.get(f"https://localhost:{https_api.port}/v1/hello")
    assert resp.status_code == 401  # no credential: the proxy only relayed bytes
    assert cp.exchanges == []


async def _gauge(proxy) -> float:
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(proxy.admin_url + "/metrics")).text
    return next(float(line.split()[-1]) for line in text.splitlines()
                if line.startswith("sesame_proxy_open_connections"))


async def test_failed_client_handshakes_and_tunnels_keep_the_gauge_and_the_logs_clean(
    cp, https_api, pki, token_file
):
    """As a real process (uvloop): apps that reject the pod CA on an intercepted CONNECT, and urllib
    tunnels to an ungoverned host, are counted in and out once each, and log nothing at error level
    (issue 11: the gauge reached -5; every tunnel logged "Task exception was never retrieved")."""
    import urllib.request

    from tests.proxy.procs import governed_args, start_proxy_process

    cp.script["aud-api"] = [("ok", API_KEY)]
    cp.routes = [route("api", "localhost", https_api.port)]
    proxy = await start_proxy_process(*governed_args(cp.url, token_file, pki))
    try:
        await proxy.wait_ready(100)
        untrusting = ssl.create_default_context()  # the system roots only: refuses the pod-CA leaf
        for _ in range(5):
            reader, writer = await asyncio.open_connection(*proxy.listen)
            writer.write(f"CONNECT localhost:{https_api.port} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
            await read_head(reader)
            try:
                await writer.start_tls(untrusting, server_hostname="localhost")
            except ssl.SSLError:
                pass
            writer.close()
        ctx = ssl.create_default_context(cafile=str(pki.dev_ca_file))
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({"https": proxy.url}), urllib.request.HTTPSHandler(context=ctx)
        )

        def fetch() -> int:
            try:  # 127.0.0.1 is not governed (the route names localhost): tunneled, no credential
                return opener.open(f"https://127.0.0.1:{https_api.port}/v1/hello", timeout=10).status
            except urllib.error.HTTPError as exc:
                return exc.code

        for _ in range(5):
            assert await asyncio.to_thread(fetch) == 401
        for _ in range(100):
            await asyncio.sleep(0.02)
            if await _gauge(proxy) == 0:
                break
        assert await _gauge(proxy) == 0
        errors = [r for r in proxy.logs if r.get("level") in ("error", "critical") or "raw" in r]
        assert errors == [], errors
    finally:
        await proxy.stop()
