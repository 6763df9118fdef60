"""HTTP/1.1 correctness of the forwarder: framing, interim responses, upgrades, pooling, timeouts, errors."""

from __future__ import annotations

import asyncio
import ssl

import httpx
import pytest

from devkit.certs import DevCA
from devkit.upstream import ApiServer, server_context
from tests.proxy.conftest import API_KEY, proxy_url, route
from tests.proxy.rawhttp import RawServer, read_head, read_message, serve_requests


@pytest.fixture
async def raw_servers():
    servers: list[RawServer] = []

    async def make(handler) -> RawServer:
        servers.append(await RawServer(handler).start())
        return servers[-1]

    yield make
    for server in servers:
        await server.close()


async def proxy_conn(proxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = proxy.listener.address
    return await asyncio.open_connection(host, port)


def ok(body: bytes = b"ok", extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def test_chunked_response_with_trailers_is_relayed(cp, start_proxy, raw_servers):
    async def handler(reader, writer):
        await read_message(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
        )
        await writer.drain()
        await asyncio.sleep(30)

    up = await raw_servers(handler)
    proxy = await start_proxy()
    async with httpx.AsyncClient(proxy=proxy_url(proxy)) as client:
        resp = await client.get(f"http://127.0.0.1:{up.port}/")
    assert resp.content == b"hello world"


async def test_chunked_request_body_is_streamed_upstream(cp, start_proxy, raw_servers):
    received = []

    def respond(start, headers, body):
        received.append((headers.get("transfer-encoding"), body))
        return ok()

    up = await raw_servers(lambda r, w: serve_requests(r, w, respond))
    proxy = await start_proxy()

    async def parts():
        for i in range(3):
            yield f"part{i};".encode()

    async with httpx.AsyncClient(proxy=proxy_url(proxy)) as client:
        resp = await client.post(f"http://127.0.0.1:{up.port}/upload", content=parts())
    assert resp.status_code == 200
    assert received == [("chunked", b"part0;part1;part2;")]


async def test_close_delimited_response_is_relayed_and_client_connection_closed(cp, start_proxy, raw_servers):
    async def handler(reader, writer):
        await read_message(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
        await writer.drain()

    up = await raw_servers(handler)
    proxy = await start_proxy()
    reader, writer = await proxy_conn(proxy)
    writer.write(f"GET http://127.0.0.1:{up.port}/ HTTP/1.1\r\nHost: 127.0.0.1:{up.port}\r\n\r\n".encode())
    start, headers = await read_head(reader)
    body = await asyncio.wait_for(reader.read(), 10)  # EOF ends the body
    writer.close()
    assert start.startswith("HTTP/1.1 200")
    assert headers["connection"] == "close"
    assert body == b"until the end"


async def test_expect_100_continue_is_relayed_before_the_body(cp, start_proxy, raw_servers):
    async def handler(reader, writer):
        _, headers = await read_head(reader)
        assert headers["expect"] == "100-continue"
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await reader.readexactly(int(headers["content-length"]))
        writer.write(ok(b"got " + body))
        await writer.drain()
        await asyncio.sleep(30)

    up = await raw_servers(handler)
    proxy = await start_proxy()
    reader, writer = await proxy_conn(proxy)
    writer.write(
        f"POST http://127.0.0.1:{up.port}/ HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        "Expect: 100-continue\r\n\r\n".encode()
    )
    interim, _ = await read_head(reader)  # the body has not been sent yet
    assert interim == "HTTP/1.1 100 Continue"
    writer.write(b"data")
    start, _, body = await read_message(reader)
    writer.close()
    assert start.startswith("HTTP/1.1 200")
    assert body == b"got data"


async def test_interim_and_final_response_in_one_read_are_both_relayed(cp, start_proxy, raw_servers):
    """An upstream that answers 100 Continue and, at once, its final response (as moto's werkzeug
    server may when it needs no body, or an upstream that sends both in one segment)."""

    async def handler(reader, writer):
        await read_head(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"early"))
        await writer.drain()
        await asyncio.sleep(30)

    up = await raw_servers(handler)
    proxy = await start_proxy()
    reader, writer = await proxy_conn(proxy)
    writer.write(f"GET http://127.0.0.1:{up.port}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    interim, _ = await read_head(reader)
    assert interim == "HTTP/1.1 100 Continue"
    start, _, body = await read_message(reader)
    writer.close()
    assert start.startswith("HTTP/1.1 200")
    assert body == b"early"


@pytest.mark.parametrize(
    ("method", "status"), [("HEAD", 200), ("GET", 204), ("GET", 304)], ids=["head", "204", "304"]
)
async def test_bodyless_responses_keep_the_connection_usable(cp, start_proxy, raw_servers, method, status):
    def respond(start, headers, body):
        if start.startswith("GET /next"):
            return ok(b"next")
        # HEAD carries the length of the body it does not send; 204/304 carry no body at all
        return (
            f"HTTP/1.1 {status} X\r\nContent-Length: 1000\r\n\r\n".encode()
            if status == 200
            else (f'HTTP/1.1 {status} X\r\nETag: "e"\r\n\r\n'.encode())
        )

    up = await raw_servers(lambda r, w: serve_requests(r, w, respond))
    proxy = await start_proxy()
    async with httpx.AsyncClient(proxy=proxy_url(proxy), timeout=10) as client:
        first = await client.request(method, f"http://127.0.0.1:{up.port}/thing")
        second = await client.get(f"http://127.0.0.1:{up.port}/next")
    assert first.status_code == status
    assert first.content == b""
    assert second.content == b"next"
    assert up.connections == 1


async def test_websocket_upgrade_is_passed_through(cp, start_proxy, raw_servers):
    async def handler(reader, writer):
        _, headers = await read_head(reader)
        assert headers["upgrade"] == "websocket"
        assert "upgrade" in headers["connection"].lower()
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: x\r\n\r\n"
        )
        for _ in range(10):
            data = await reader.read(1024)
            if not data:
                break
            writer.write(data.upper())
            await writer.drain()

    up = await raw_servers(handler)
    proxy = await start_proxy()
    reader, writer = await proxy_conn(proxy)
    writer.write(
        f"GET http://127.0.0.1:{up.port}/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    start, headers = await read_head(reader)
    assert start.startswith("HTTP/1.1 101")
    assert headers["upgrade"] == "websocket"
    writer.write(b"frame-bytes")
    assert await asyncio.wait_for(reader.readexactly(11), 10) == b"FRAME-BYTES"
    writer.close()


async def test_upstream_connections_are_kept_alive_and_reused(cp, start_proxy, raw_servers):
    up = await raw_servers(lambda r, w: serve_requests(r, w, lambda *_: ok()))
    proxy = await start_proxy()
    for _ in range(3):  # three separate client connections
        async with httpx.AsyncClient(proxy=proxy_url(proxy)) as client:
            for _ in range(3):
                assert (await client.get(f"http://127.0.0.1:{up.port}/")).status_code == 200
    assert up.connections == 1


async def test_hop_by_hop_headers_are_not_forwarded(cp, start_proxy, raw_servers):
    seen = []

    def respond(start, headers, body):
        seen.append(headers)
        return ok(extra="Connection: X-Secret-Hop\r\nX-Secret-Hop: 1\r\nKeep-Alive: timeout=5\r\n")

    up = await raw_servers(lambda r, w: serve_requests(r, w, respond))
    proxy = await start_proxy()
    async with httpx.AsyncClient(proxy=proxy_url(proxy)) as client:
        resp = await client.get(
            f"http://127.0.0.1:{up.port}/",
            headers={
                "Connection": "X-Hop",
                "X-Hop": "1",
                "Keep-Alive": "300",
                "Proxy-Authorization": "p",
                "TE": "trailers",
                "X-End": "kept",
            },
        )
    assert not {"x-hop", "keep-alive", "proxy-authorization", "te"} & set(seen[0])
    assert seen[0]["x-end"] == "kept"
    assert "x-secret-hop" not in resp.headers
    assert "keep-alive" not in resp.headers


async def test_silent_upstream_gives_504(cp, start_proxy, raw_servers):
    async def handler(reader, writer):
        await read_message(reader)
        await asyncio.sleep(30)

    up = await raw_servers(handler)
    proxy = await start_proxy(response_timeout=0.3)
    async with httpx.AsyncClient(proxy=proxy_url(proxy), timeout=10) as client:
        resp = await client.get(f"http://127.0.0.1:{up.port}/")
    assert resp.status_code == 504
    assert resp.json()["error"] == "upstream_timeout"


async def test_refused_connection_gives_502(cp, start_proxy, raw_servers):
    up = await raw_servers(lambda r, w: asyncio.sleep(0))
    await up.close()
    proxy = await start_proxy()
    async with httpx.AsyncClient(proxy=proxy_url(proxy), timeout=10) as client:
        resp = await client.get(f"http://127.0.0.1:{up.port}/")
    assert resp.status_code == 502
    assert resp.json()["error"] == "upstream_unreachable"


async def test_malformed_upstream_response_gives_502(cp, start_proxy, raw_servers):
    async def handler(reader, writer):
        await read_message(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()

    up = await raw_servers(handler)
    proxy = await start_proxy()
    async with httpx.AsyncClient(proxy=proxy_url(proxy), timeout=10) as client:
        resp = await client.get(f"http://127.0.0.1:{up.port}/")
    assert resp.status_code == 502
    assert resp.json()["error"] == "bad_upstream_response"


async def test_untrusted_upstream_certificate_gives_502_and_sends_nothing(cp, start_proxy, pki, tmp_path):
    rogue = DevCA("Rogue CA").issue(["localhost"], tmp_path / "rogue")
    api = await ApiServer(API_KEY, ssl_context=server_context(rogue.cert_file, rogue.key_file)).start()
    try:
        cp.script["aud-api"] = [("ok", API_KEY)]
        cp.routes = [route("api", "localhost", api.port)]
        proxy = await start_proxy()
        verify = ssl.create_default_context(cafile=str(pki.client_bundle))
        async with httpx.AsyncClient(proxy=proxy_url(proxy), verify=verify, timeout=10) as client:
            resp = await client.get(f"https://localhost:{api.port}/v1/hello")
        assert resp.status_code == 502
        assert resp.json()["error"] == "upstream_tls_error"
        assert api.seen == []
    finally:
        await api.close()


async def test_origin_form_request_to_explicit_proxy_is_400(cp, start_proxy):
    proxy = await start_proxy()
    reader, writer = await proxy_conn(proxy)
    writer.write(b"GET /not-a-proxy-request HTTP/1.1\r\nHost: x\r\n\r\n")
    start, _, body = await read_message(reader)
    writer.close()
    assert start.startswith("HTTP/1.1 400")
    assert b"bad_request" in body


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",  # relayed by the fast path
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n",  # relayed by the streams path
    ],
    ids=["content-length", "chunked"],
)
async def test_upstream_stalled_mid_body_is_cut_after_the_stream_idle_timeout(
    cp, start_proxy, raw_servers, head
):
    upstream_closed = asyncio.Event()

    async def handler(reader, writer):
        await read_message(reader)
        writer.write(head + b"first-bytes")
        await writer.drain()
        await reader.read()  # stall; returns when the proxy gives up on this connection
        upstream_closed.set()

    up = await raw_servers(handler)
    proxy = await start_proxy(stream_idle_timeout=0.2)
    reader, writer = await proxy_conn(proxy)
    writer.write(f"GET http://127.0.0.1:{up.port}/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    received = await asyncio.wait_for(reader.read(), 10)  # EOF: the proxy cut the stalled response
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert received.endswith(b"first-bytes")
    await asyncio.wait_for(upstream_closed.wait(), 10)
    writer.close()
    sample = proxy.metrics.sample
    assert (
        sample("sesame_proxy_requests_total", {"target": "ungoverned", "outcome": "stream_idle_timeout"}) == 1
    )


async def test_client_stalled_mid_body_is_cut_after_the_stream_idle_timeout(cp, start_proxy, raw_servers):
    upstream_got: list[bytes] = []
    upstream_closed = asyncio.Event()

    async def handler(reader, writer):
        await read_head(reader)
        upstream_got.append(await reader.read())  # until the proxy closes the upstream connection
        upstream_closed.set()

    up = await raw_servers(handler)
    proxy = await start_proxy(stream_idle_timeout=0.2)
    reader, writer = await proxy_conn(proxy)
    writer.write(
        f"POST http://127.0.0.1:{up.port}/ HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
        + b"Content-Length: 1000000\r\n\r\nonly-the-start"
    )  # ... and the app never sends the rest
    received = await asyncio.wait_for(reader.read(), 10)
    assert received.startswith(b"HTTP/1.1 408 ")
    assert b'"error": "request_body_timeout"' in received
    await asyncio.wait_for(upstream_closed.wait(), 10)
    assert upstream_got == [b"only-the-start"]
    writer.close()


async def test_pipelined_requests_are_answered_in_order_on_one_upstream_connection(
    cp, start_proxy, raw_servers
):
    async def handler(reader, writer):
        await serve_requests(reader, writer, lambda start, headers, body: ok(start.split(" ")[1].encode()))

    up = await raw_servers(handler)
    proxy = await start_proxy()
    reader, writer = await proxy_conn(proxy)
    writer.write(
        b"".join(
            f"GET http://127.0.0.1:{up.port}/r{i} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
            for i in range(5)
        )
    )
    bodies = [(await read_message(reader))[2] for _ in range(5)]
    writer.close()
    assert bodies == [b"/r0", b"/r1", b"/r2", b"/r3", b"/r4"]
    assert up.connections == 1
