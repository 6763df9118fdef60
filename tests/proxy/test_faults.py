"""Failure rules end to end through the proxy, against the control-plane double and a real upstream."""

from __future__ import annotations

import asyncio
import hashlib
import os

import httpx
import pytest

from proxy.engine import REPLAY_LIMIT
from tests.proxy.conftest import API_KEY, proxy_url, route
from tests.proxy.rawhttp import RawServer, serve_requests


async def get(proxy, url: str, **kwargs) -> httpx.Response:
    async with httpx.AsyncClient(proxy=proxy_url(proxy), timeout=10) as client:
        return await client.get(url, **kwargs)


async def test_cached_credential_survives_outage_then_fails_closed_then_recovers(
    cp, start_proxy, http_api, clock
):
    cp.expires_in = 100
    cp.script["aud-api"] = [("ok", API_KEY)]
    cp.routes = [route("api", "127.0.0.1", http_api.port, scheme="http")]
    proxy = await start_proxy()
    url = f"http://127.0.0.1:{http_api.port}/v1/hello"
    assert (await get(proxy, url)).status_code == 200
    await cp.stop()
    clock.advance(95)  # past refresh-ahead, before expiry: the refresh fails, the cache serves
    assert (await get(proxy, url)).status_code == 200
    assert (await get(proxy, url)).status_code == 200
    clock.advance(10)  # expired
    resp = await get(proxy, url)
    assert resp.status_code == 503
    assert resp.json()["error"] == "credential_unavailable"
    served = len(http_api.seen)
    await cp.start()
    assert (await get(proxy, url)).status_code == 200
    assert len(http_api.seen) == served + 1  # the failed request never reached the upstream


async def test_rotated_token_file_is_used_for_the_next_exchange(cp, start_proxy, http_api, token_file, clock):
    cp.script["aud-api"] = [("ok", API_KEY)]
    cp.routes = [route("api", "127.0.0.1", http_api.port, scheme="http")]
    cp.expires_in = 10
    proxy = await start_proxy()
    url = f"http://127.0.0.1:{http_api.port}/v1/hello"
    await get(proxy, url)
    replacement = token_file.with_name("token.new")
    replacement.write_text("sa-token-2-rotated")
    replacement.replace(token_file)  # atomic swap, as the kubelet does
    clock.advance(11)
    await get(proxy, url)
    assert [e["subject_token"] for e in cp.exchanges] == ["sa-token-1", "sa-token-2-rotated"]


async def test_upstream_401_drops_credential_and_retries_once(cp, start_proxy, http_api):
    cp.script["aud-api"] = [("ok", "revoked-upstream-key"), ("ok", API_KEY)]
    cp.routes = [route("api", "127.0.0.1", http_api.port, scheme="http")]
    proxy = await start_proxy()
    async with httpx.AsyncClient(proxy=proxy_url(proxy), timeout=10) as client:
        resp = await client.put(f"http://127.0.0.1:{http_api.port}/v1/item", content=b"small body")
    assert resp.status_code == 200
    assert [s.authorized for s in http_api.seen] == [False, True]
    assert cp.exchanges_for("aud-api") == 2
    assert resp.json()["body_bytes"] == len(b"small body")


async def test_upstream_401_is_returned_after_one_retry(cp, start_proxy, http_api):
    cp.routes = [route("api", "127.0.0.1", http_api.port, scheme="http")]  # tokens never match the key
    proxy = await start_proxy()
    resp = await get(proxy, f"http://127.0.0.1:{http_api.port}/v1/item")
    assert resp.status_code == 401
    assert len(http_api.seen) == 2
    assert cp.exchanges_for("aud-api") == 2


class KeyCheckingUpstream:
    """A raw upstream that accepts only the keys in `valid` and records every attempt's key and body."""

    def __init__(self, valid: set[str]) -> None:
        self.valid = valid
        self.attempts: list[tuple[str | None, bytes]] = []
        self.server = RawServer(lambda r, w: serve_requests(r, w, self._respond))

    def _respond(self, start: str, headers: dict, body: bytes) -> bytes:
        self.attempts.append((headers.get("authorization"), body))
        status = "200 OK" if headers.get("authorization") in self.valid else "401 Unauthorized"
        digest = hashlib.sha256(body).hexdigest().encode()  # the body as the upstream received it
        return f"HTTP/1.1 {status}\r\nContent-Length: {len(digest)}\r\n\r\n".encode() + digest


@pytest.fixture
async def key_upstream():
    upstream = KeyCheckingUpstream({"Bearer key-1"})
    await upstream.server.start()
    yield upstream
    await upstream.server.close()


async def _post_after_key_revocation(
    cp, start_proxy, key_upstream, body: bytes, *, warm: bool
) -> httpx.Response:
    """POST `body` through the proxy after the upstream revoked key-1 (the control plane mints key-2 next)."""
    cp.script["aud-api"] = [("ok", "key-1"), ("ok", "key-2")]
    cp.routes = [route("api", "127.0.0.1", key_upstream.server.port, scheme="http")]
    proxy = await start_proxy()
    url = f"http://127.0.0.1:{key_upstream.server.port}/v1/upload"
    async with httpx.AsyncClient(proxy=proxy_url(proxy), timeout=10) as client:
        if warm:
            assert (await client.get(url)).status_code == 200
            key_upstream.attempts.clear()
        key_upstream.valid = {"Bearer key-2"}  # the upstream revoked key-1
        return await client.post(url, content=body)


# warm: the credential is cached before the POST (the fast path sees the 401);
# cold: the POST itself causes the first exchange (the streams forwarder sees the 401).
@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
async def test_upstream_401_replays_a_buffered_body_once_with_the_fresh_credential(
    cp, start_proxy, key_upstream, warm
):
    body = os.urandom(REPLAY_LIMIT)  # the largest replayable body
    resp = await _post_after_key_revocation(cp, start_proxy, key_upstream, body, warm=warm)
    assert resp.status_code == 200, resp.text
    assert resp.text == hashlib.sha256(body).hexdigest()
    assert key_upstream.attempts == [("Bearer key-1", body), ("Bearer key-2", body)]
    assert cp.exchanges_for("aud-api") == 2


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
async def test_upstream_401_with_a_body_over_the_replay_limit_reaches_the_client(
    cp, start_proxy, key_upstream, warm
):
    body = os.urandom(REPLAY_LIMIT + 1)  # streamed, not buffered: cannot be sent twice
    resp = await _post_after_key_revocation(cp, start_proxy, key_upstream, body, warm=warm)
    assert resp.status_code == 401
    assert resp.text == hashlib.sha256(body).hexdigest()  # the upstream's own 401, body intact
    assert key_upstream.attempts == [("Bearer key-1", body)]
    assert cp.exchanges_for("aud-api") == 1


async def test_hundred_concurrent_cold_requests_cause_one_exchange(cp, start_proxy, http_api):
    cp.exchange_delay = 0.2
    cp.script["aud-api"] = [("ok", API_KEY)]
    cp.routes = [route("api", "127.0.0.1", http_api.port, scheme="http")]
    proxy = await start_proxy()
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(proxy=proxy_url(proxy), timeout=20, limits=limits) as client:
        resps = await asyncio.gather(
            *(client.get(f"http://127.0.0.1:{http_api.port}/v1/n/{i}") for i in range(100))
        )
    assert [r.status_code for r in resps] == [200] * 100
    assert cp.exchanges_for("aud-api") == 1


async def test_policy_denied_is_a_403_and_nothing_is_forwarded(cp, start_proxy, http_api):
    cp.script["aud-api"] = [(403, {"error": "policy_denied", "message": "no policy allows this"})]
    cp.routes = [route("api", "127.0.0.1", http_api.port, scheme="http")]
    proxy = await start_proxy()
    resp = await get(proxy, f"http://127.0.0.1:{http_api.port}/v1/hello")
    assert resp.status_code == 403
    assert resp.json()["error"] == "policy_denied"
    assert http_api.seen == []


async def test_approval_pending_is_a_403_with_the_approval_id(cp, start_proxy, http_api):
    cp.script["aud-api"] = [(202, {"status": "approval_pending", "approval_id": "ap_123"})]
    cp.routes = [route("api", "127.0.0.1", http_api.port, scheme="http")]
    proxy = await start_proxy()
    resp = await get(proxy, f"http://127.0.0.1:{http_api.port}/v1/hello")
    assert resp.status_code == 403
    assert resp.json()["error"] == "approval_pending"
    assert resp.json()["approval_id"] == "ap_123"
    assert http_api.seen == []


async def test_control_plane_unreachable_at_first_request_fails_closed(cp, start_proxy, http_api):
    cp.routes = [route("api", "127.0.0.1", http_api.port, scheme="http")]
    proxy = await start_proxy()
    await cp.stop()
    resp = await get(proxy, f"http://127.0.0.1:{http_api.port}/v1/hello")
    assert resp.status_code == 503
    assert resp.json()["error"] == "credential_unavailable"
    assert http_api.seen == []
