"""The admin listener: /healthz, /readyz, /metrics and POST /quitquitquit (graceful exit for Jobs).

Served with the proxy's own HTTP/1.1 code (one request per connection) instead of aiohttp, to keep the
sidecar's memory small; probes and scrapes are rare and tiny.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Callable
from http import HTTPStatus

from proxy.errors import BadRequest, ProxyError
from proxy.http_framing import find_head
from proxy.http_messages import MAX_HEAD, parse_request_head, serialize_head
from proxy.identity import TokenFile
from proxy.metrics import CONTENT_TYPE, Metrics

__all__ = ["AdminServer"]

_REQUEST_TIMEOUT = 10.0


def _is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _response(status: int, body: bytes, content_type: str = "application/json") -> bytes:
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), ("Connection", "close")]
    return serialize_head(f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", headers) + body


def _json(status: int, data: dict) -> bytes:
    return _response(status, json.dumps(data).encode())


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    """A request head (the admin endpoints take no body); empty when the peer closed first."""
    buf = b""
    while (end := find_head(buf, BadRequest)) is None:
        data = await reader.read(MAX_HEAD)
        if not data:
            return b""
        buf += data
    return buf[:end]


class AdminServer:
    """Serves probes and metrics on the admin address; `quit_event` is set by POST /quitquitquit."""

    def __init__(
        self,
        *,
        address: tuple[str, int],
        metrics: Metrics,
        token: TokenFile,
        routes_loaded: Callable[[], bool],
        quit_event: asyncio.Event,
    ) -> None:
        self.address = address
        self._metrics, self._token, self._routes_loaded = metrics, token, routes_loaded
        self._quit = quit_event
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self.address[0], self.address[1], limit=MAX_HEAD, reuse_address=True
        )
        self.address = self._server.sockets[0].getsockname()[:2]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT):
                raw = await _read_head(reader)
                if raw:
                    req = parse_request_head(raw)
                    peer = writer.get_extra_info("peername")
                    writer.write(
                        self._route(req.method, req.target.split("?", 1)[0], peer[0] if peer else None)
                    )
                    await writer.drain()
        except (ProxyError, TimeoutError, ConnectionError, OSError):  # probes get no error body
            pass
        finally:
            writer.close()

    def _route(self, method: str, path: str, peer: str | None) -> bytes:
        if path == "/healthz" and method == "GET":
            return _json(200, {"status": "ok"})
        if path == "/readyz" and method == "GET":
            return self._readyz()
        if path == "/metrics" and method == "GET":
            return _response(200, self._metrics.render(), CONTENT_TYPE)
        if path == "/quitquitquit" and method == "POST":
            if not _is_loopback(peer):  # the admin port may face the kubelet; quitting is local only
                return _json(
                    403, {"error": "forbidden", "message": "quitquitquit is allowed from loopback only"}
                )
            self._quit.set()
            return _json(200, {"status": "quitting"})
        if path in ("/healthz", "/readyz", "/metrics", "/quitquitquit"):
            return _json(
                405, {"error": "method_not_allowed", "message": f"{method} is not allowed on {path}"}
            )
        return _json(404, {"error": "not_found", "message": f"no admin endpoint {path}"})

    def _readyz(self) -> bytes:
        checks = {"routes": "ok" if self._routes_loaded() else "not_loaded"}
        try:
            self._token.read()
            checks["token"] = "ok"
        except ProxyError as exc:
            checks["token"] = exc.code
        ready = all(v == "ok" for v in checks.values())
        return _json(200 if ready else 503, {"status": "ok" if ready else "unavailable", "checks": checks})
