"""Explicit mode with real clients (httpx, requests, curl): credentials injected only for governed hosts."""

from __future__ import annotations

import asyncio
import base64
import ssl

import httpx
import pytest
import requests

from devkit.upstream import server_context
from tests.proxy.conftest import API_KEY, client_ssl, proxy_url, route
from tests.proxy.rawhttp import read_message, serve_requests


async def test_httpx_plain_http_gets_bearer_injected(cp, start_proxy, http_api):
    cp.script["aud-plain"] = [("ok", API_KEY)]
    cp.routes = [route("plain", "127.0.0.1", http_api.port, scheme="http")]
    proxy = await start_proxy()
    async with httpx.AsyncClient(proxy=proxy_url(proxy)) as client:
        resp = await client.get(f"http://127.0.0.1:{http_api.port}/v1/things?x=1")
    assert resp.status_code == 200, resp.text
    assert http_api.seen[-1].headers["Authorization"] == f"Bearer {API_KEY}"
    assert http_api.seen[-1].query == {"x": "1"}
    assert cp.exchanges[0]["subject_token"] == "sa-token-1"
    assert cp.exchanges[0]["subject_token_type"] == "urn:ietf:params:oauth:token-type:jwt"


async def test_httpx_intercepted_https_overwrites_placeholder(cp, start_proxy, https_api, pki):
    cp.script["aud-api"] = [("ok", API_KEY)]
    cp.routes = [route("api", "localhost", https_api.port)]
    proxy = await start_proxy()
    async with httpx.AsyncClient(proxy=proxy_url(proxy), verify=client_ssl(pki)) as client:
        resp = await client.post(
            f"https://localhost:{https_api.port}/v1/charges",
            json={"amount": 3},
            headers={"Authorization": "Bearer placeholder"},
        )
        again = await client.get(f"https://localhost:{https_api.port}/v1/charges")
    assert resp.status_code == 200, resp.text
    assert again.status_code == 200
    assert [s.headers["Authorization"] for s in https_api.seen] == [f"Bearer {API_KEY}"] * 2
    assert resp.json()["body_bytes"] == len(b'{"amount":3}')
    assert cp.exchanges_for("aud-api") == 1  # second request served from the cache


def _requests_get(url: str, proxy: str, verify: str) -> requests.Response:
    with requests.Session() as session:
        session.trust_env = False
        return session.get(url, proxies={"http": proxy, "https": proxy}, verify=verify, timeout=10)


@pytest.mark.parametrize(
    ("injection", "check"),
    [
        (
            {"type": "header", "name": "X-Api-Key", "prefix": None},
            lambda s: s.headers["X-Api-Key"] == API_KEY,
        ),
        ({"type": "query", "name": "api_key", "prefix": None}, lambda s: s.query["api_key"] == API_KEY),
        (
            {"type": "basic", "name": None, "prefix": None},
            lambda s: base64.b64decode(s.headers["Authorization"][6:]).decode() == f"user:{API_KEY}",
        ),
    ],
    ids=["header", "query", "basic"],
)
async def test_requests_intercepted_https_with_each_injection_type(
    cp, start_proxy, https_api, pki, injection, check
):
    token = f"user:{API_KEY}" if injection["type"] == "basic" else API_KEY
    cp.script["aud-api"] = [("ok", token)]
    cp.routes = [route("api", "localhost", https_api.port, injection=injection)]
    proxy = await start_proxy()
    url = f"https://localhost:{https_api.port}/v1/items?api_key=placeholder&page=2"
    resp = await asyncio.to_thread(_requests_get, url, proxy_url(proxy), str(pki.client_bundle))
    assert resp.status_code == 200, resp.text
    seen = https_api.seen[-1]
    assert check(seen)
    assert seen.query["page"] == "2"


async def test_curl_through_proxy_with_no_key_gets_200(cp, start_proxy, https_api, pki):
    cp.script["aud-api"] = [("ok", API_KEY)]
    cp.routes = [route("api", "localhost", https_api.port)]
    proxy = await start_proxy()
    proc = await asyncio.create_subprocess_exec(
        "curl",
        "-sS",
        "--max-time",
        "10",
        "--proxy",
        proxy_url(proxy),
        "--cacert",
        str(pki.client_bundle),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        f"https://localhost:{https_api.port}/v1/hello",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert out.decode() == "200", err.decode()
    assert https_api.seen[-1].authorized


async def test_ungoverned_host_is_tunneled_without_credential(cp, start_proxy, https_api, pki):
    """127.0.0.1 is not named by any route (only localhost is): its TLS reaches the real server."""
    cp.routes = [route("api", "localhost", https_api.port)]
    proxy = await start_proxy()
    dev_only = ssl.create_default_context(cafile=str(pki.dev_ca_file))  # would reject a pod-CA leaf
    async with httpx.AsyncClient(proxy=proxy_url(proxy), verify=dev_only) as client:
        resp = await client.get(
            f"https://127.0.0.1:{https_api.port}/v1/hello", headers={"Authorization": "Bearer app-own"}
        )
    assert resp.status_code == 401  # the API got the app's own header, untouched
    assert https_api.seen[-1].headers["Authorization"] == "Bearer app-own"
    assert cp.exchanges == []


async def test_ungoverned_plain_http_forwarded_unchanged(cp, start_proxy, http_api):
    cp.routes = [route("other", "localhost", http_api.port, scheme="http")]
    proxy = await start_proxy()
    async with httpx.AsyncClient(proxy=proxy_url(proxy)) as client:
        resp = await client.get(f"http://127.0.0.1:{http_api.port}/x", headers={"X-Api-Key": "mine"})
    assert resp.status_code == 401  # the app's own (wrong) key arrived untouched; nothing injected
    assert "Authorization" not in http_api.seen[-1].headers
    assert http_api.seen[-1].headers["X-Api-Key"] == "mine"
    assert cp.exchanges == []


async def test_intercepted_leaf_is_signed_by_the_pod_ca(cp, start_proxy, https_api, pki):
    cp.script["aud-api"] = [("ok", API_KEY)]
    cp.routes = [route("api", "localhost", https_api.port)]
    proxy = await start_proxy()
    pod_only = ssl.create_default_context(cafile=str(pki.pod_ca_file))
    async with httpx.AsyncClient(proxy=proxy_url(proxy), verify=pod_only) as client:
        resp = await client.get(f"https://localhost:{https_api.port}/v1/hello")
    assert resp.status_code == 200


async def test_originate_route_upgrades_plain_request_to_https(cp, start_proxy, https_api):
    cp.script["aud-api"] = [("ok", API_KEY)]
    cp.routes = [route("api", "localhost", https_api.port, tls="originate")]
    proxy = await start_proxy()
    async with httpx.AsyncClient(proxy=proxy_url(proxy)) as client:
        resp = await client.get(f"http://localhost:{https_api.port}/v1/hello")
    assert resp.status_code == 200, resp.text
    assert https_api.seen[-1].authorized


async def test_intercepted_connection_negotiates_http11_with_app_and_upstream(cp, start_proxy, pki):
    """An HTTP/1.1 app (ALPN http/1.1) gets http/1.1; the upstream (offering both) is asked for
    http/1.1 only — the proxy speaks HTTP/1.1 on both legs (h2 apps: tests/proxy/test_http2.py)."""
    upstream_alpn: list[str | None] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_alpn.append(writer.get_extra_info("ssl_object").selected_alpn_protocol())
        await serve_requests(reader, writer, lambda *_: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        writer.close()

    up_ctx = server_context(pki.server_cert, pki.server_key)
    up_ctx.set_alpn_protocols(["h2", "http/1.1"])
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=up_ctx)
    port = server.sockets[0].getsockname()[1]
    cp.script["aud-api"] = [("ok", API_KEY)]
    cp.routes = [route("api", "localhost", port)]
    proxy = await start_proxy()
    try:
        reader, writer = await asyncio.open_connection(*proxy.listener.address)
        writer.write(f"CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n".encode())
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        app_ctx = client_ssl(pki)
        app_ctx.set_alpn_protocols(["http/1.1"])
        await writer.start_tls(app_ctx, server_hostname="localhost")
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
        writer.write(b"GET /v1/alpn HTTP/1.1\r\nHost: localhost\r\n\r\n")
        start, _, body = await read_message(reader)
        writer.close()
    finally:
        server.close()
    assert start.startswith("HTTP/1.1 200") and body == b"ok"
    assert upstream_alpn == ["http/1.1"]
