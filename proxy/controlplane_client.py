"""The proxy's client for the control plane's proxy-facing API (routes, token exchange, fleet reports).

It speaks HTTP/1.1 with the proxy's own wire code and a keep-alive pool rather than aiohttp: that
client alone costs ~12 MB of RSS per pod, a third of the proxy's memory budget.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from proxy.errors import (
    ApprovalPending,
    CredentialUnavailable,
    Denied,
    ProviderFailed,
    ProxyError,
    UpstreamProtocolError,
)
from proxy.http_framing import find_head, framer
from proxy.http_messages import Body, Response, parse_response_head, serialize_head
from proxy.identity import TokenFile
from proxy.pool import Destination, UpstreamPool

__all__ = [
    "CA_CHECK_INTERVAL",
    "DEFAULT_CP_TIMEOUT",
    "JWT_TOKEN_TYPE",
    "ControlPlaneClient",
    "ReloadingTrust",
]

log = logging.getLogger("sesame.proxy")

DEFAULT_CP_TIMEOUT = 5.0
CA_CHECK_INTERVAL = 10.0
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
_DENIALS = {"policy_denied", "workload_revoked", "unknown_workload", "unknown_target"}
_PROVIDER_FAILURES = {"provider_timeout": 504, "provider_unavailable": 503, "provider_denied": 403}


class ReloadingTrust:
    """The control plane's CA from a file (a mounted ConfigMap or Secret, updated in place when the CA
    rolls over): a new TLS context when the file changes, checked at most every ``interval`` seconds.
    A missing or unreadable file keeps the last good context."""

    def __init__(
        self,
        path: Path,
        build: Callable[[str], ssl.SSLContext],
        *,
        interval: float = CA_CHECK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path, self._build, self._interval, self._clock = path, build, interval, clock
        self._stamp = self._identity()
        self.context = build(str(path))
        self._next = clock() + interval

    def _identity(self) -> tuple[int, int, int]:
        st = os.stat(self._path)
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def current(self) -> tuple[ssl.SSLContext, bool]:
        """(the context to use, whether it changed since the last call)."""
        now = self._clock()
        if now < self._next:
            return self.context, False
        self._next = now + self._interval
        try:
            stamp = self._identity()
            if stamp == self._stamp:
                return self.context, False
            self.context, self._stamp = self._build(str(self._path)), stamp
        except (OSError, ssl.SSLError) as exc:
            log.warning("control plane CA not reloaded (keeping the current one): %s", exc)
            return self.context, False
        log.info("control plane CA reloaded from %s", self._path)
        return self.context, True


class ControlPlaneClient:
    """Every call authenticates with the current service-account token; failures become ProxyErrors.

    Transient failures (unreachable, 5xx, 429, rejected token) raise CredentialUnavailable so a
    cached credential may keep serving; definitive refusals raise Denied / ApprovalPending.
    """

    def __init__(
        self,
        base_url: str,
        token: TokenFile,
        *,
        timeout: float = DEFAULT_CP_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
        trust: ReloadingTrust | None = None,
    ) -> None:
        """``trust``: the CA comes from a file that may change (it wins over ``ssl_context``)."""
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"invalid control plane URL {base_url!r}")
        tls = url.scheme == "https"
        port = url.port or (443 if tls else 80)
        self.token = token
        self._prefix = url.path.rstrip("/")
        self._host_header = url.netloc
        self._timeout = timeout
        self._trust = trust if tls else None
        ctx = (trust.context if trust else ssl_context or ssl.create_default_context()) if tls else None
        self._dest = Destination(url.hostname, port, ctx, url.hostname)
        self._pool = UpstreamPool(connect_timeout=timeout, idle_timeout=30.0, max_idle_per_upstream=4)

    def _auth(self) -> list[tuple[str, str]]:
        return [("Authorization", f"Bearer {self.token.read()}")]

    async def get_routes(self, etag: str | None) -> tuple[list[dict], str | None, int] | None:
        """(routes, etag, refresh_seconds), or None when unchanged (304)."""
        headers = self._auth() + ([("If-None-Match", etag)] if etag else [])
        status, resp_headers, body = await self._call("GET", "/v1/proxy/routes", headers)
        if status == 304:
            return None
        if status != 200 or not isinstance(body, dict):
            raise CredentialUnavailable(f"route refresh failed: {_describe(status, body)}")
        etag = next((v for n, v in resp_headers if n.lower() == "etag"), None)
        return list(body.get("routes") or []), etag, int(body.get("refresh_seconds") or 30)

    async def exchange(self, audience: str) -> tuple[str, float]:
        """RFC 8693 exchange of the SA token for the target's credential → (access_token, expires_in)."""
        payload = {
            "subject_token": self.token.read(),
            "subject_token_type": JWT_TOKEN_TYPE,
            "audience": audience,
        }
        status, _, body = await self._call("POST", "/v1/token-exchange", [], payload)
        if status == 200 and isinstance(body, dict) and body.get("access_token"):
            return str(body["access_token"]), float(body.get("expires_in") or 60)
        code = body.get("error") if isinstance(body, dict) else None
        if status == 202 or (isinstance(body, dict) and body.get("status") == "approval_pending"):
            approval_id = body.get("approval_id") if isinstance(body, dict) else None
            raise ApprovalPending("the policy for this target requires an approval", approval_id=approval_id)
        if status in (403, 404) and code in _DENIALS:
            raise Denied(code, str(body.get("message") or code))
        if code in _PROVIDER_FAILURES:
            message = f"the target's credential provider failed: {code}"
            if code == "provider_denied":  # the control plane's own words (never the upstream's body)
                message = f"the target's credential provider refused: {str(body.get('message'))[:300]}"
            raise ProviderFailed(code, _PROVIDER_FAILURES[code], message)
        raise CredentialUnavailable(f"token exchange failed: {_describe(status, body)}")

    async def heartbeat(self, pod: str, version: str) -> None:
        await self._report("/v1/proxy/heartbeat", {"pod": pod, "version": version})

    async def observations(self, batch: list[dict[str, Any]]) -> None:
        await self._report("/v1/proxy/observations", batch)

    async def _report(self, path: str, payload: Any) -> None:
        status, _, body = await self._call("POST", path, self._auth(), payload)
        if status >= 300:
            raise CredentialUnavailable(f"{path} failed: {_describe(status, body)}")

    async def _call(
        self, method: str, path: str, headers: list[tuple[str, str]], payload: Any = None
    ) -> tuple[int, list[tuple[str, str]], Any]:
        data = json.dumps(payload).encode() if payload is not None else b""
        head = [("Host", self._host_header), ("Accept", "application/json"), *headers]
        if payload is not None:
            head += [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        request = serialize_head(f"{method} {self._prefix}{path} HTTP/1.1", head) + data
        for attempt in (1, 2):
            try:
                if self._trust is not None:
                    ctx, changed = self._trust.current()
                    if changed:  # new connections verify against the new CA; pooled ones were verified
                        self._dest = replace(self._dest, ssl=ctx)
                conn, reused = await self._pool.acquire(self._dest)
            except ProxyError as exc:
                raise CredentialUnavailable(f"control plane unreachable: {exc.message}") from exc
            try:
                async with asyncio.timeout(self._timeout):
                    conn.writer.write(request)
                    resp, body = await _read_response(conn.reader, method)
            except (
                OSError,
                asyncio.IncompleteReadError,
                TimeoutError,
                ProxyError,
            ) as exc:
                conn.close()
                if reused and attempt == 1 and isinstance(exc, ConnectionError | asyncio.IncompleteReadError):
                    continue  # a pooled connection the control plane had closed
                raise CredentialUnavailable(f"control plane unreachable: {type(exc).__name__}") from exc
            if resp.keep_alive and resp.body != Body.CLOSE:
                self._pool.release(conn)
            else:
                conn.close()
            content_type = next((v for n, v in resp.headers if n.lower() == "content-type"), "")
            parsed: Any = None
            if body and content_type.startswith("application/json"):
                try:
                    parsed = json.loads(body)
                except ValueError:
                    parsed = None
            return resp.status, resp.headers, parsed
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        self._pool.close()


async def _read_response(reader: asyncio.StreamReader, method: str) -> tuple[Response, bytes]:
    """One response with its whole (bounded) body, framed by the proxy's one HTTP/1.1 framing code."""
    buf = bytearray()
    while (end := find_head(buf, UpstreamProtocolError)) is None:
        data = await reader.read(65536)
        if not data:
            raise asyncio.IncompleteReadError(bytes(buf), None)
        buf += data
    resp = parse_response_head(bytes(buf[:end]), method)
    body = framer(resp.body, resp.length, UpstreamProtocolError, collect=True)
    if resp.body == Body.LENGTH and resp.length > MAX_RESPONSE_BYTES:
        raise UpstreamProtocolError(f"body larger than {MAX_RESPONSE_BYTES} bytes")
    rest = bytes(buf[end:])
    while True:
        if body.feed(rest) < len(rest):
            raise UpstreamProtocolError("bytes after the response")
        if body.done:
            break
        if len(body.payload) > MAX_RESPONSE_BYTES:  # type: ignore[arg-type]
            raise UpstreamProtocolError(f"body larger than {MAX_RESPONSE_BYTES} bytes")
        rest = await reader.read(65536)
        if not rest:
            body.eof()
            break
    return resp, bytes(body.payload)  # type: ignore[arg-type]


def _describe(status: int, body: Any) -> str:
    code = body.get("error") if isinstance(body, dict) else None
    return f"HTTP {status}" + (f" {code}" if code else "")
