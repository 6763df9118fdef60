"""A control-plane double serving the proxy-facing wire format of the team contract (BRIEF).

Used by tests/proxy only, so proxy behaviour can be tested in isolation (exchange counts, outages,
denials on demand); tests/e2e run the same behaviours against the real control plane.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class ControlPlaneDouble:
    routes: list[dict[str, Any]] = field(default_factory=list)
    expires_in: int = 300
    refresh_seconds: int = 30
    # audience → list of responses to give in order (last one repeats): ("ok", token) | (status, body)
    script: dict[str, list[tuple[Any, Any]]] = field(default_factory=dict)
    exchange_delay: float = 0.0
    exchanges: list[dict[str, Any]] = field(default_factory=list)
    route_requests: list[dict[str, str]] = field(default_factory=list)
    heartbeats: list[dict[str, Any]] = field(default_factory=list)
    observations: list[dict[str, Any]] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def exchanges_for(self, audience: str) -> int:
        return sum(1 for e in self.exchanges if e["audience"] == audience)

    async def start(self) -> ControlPlaneDouble:
        app = web.Application()
        app.router.add_get("/v1/proxy/routes", self._routes)
        app.router.add_post("/v1/token-exchange", self._exchange)
        app.router.add_post("/v1/proxy/heartbeat", self._heartbeat)
        app.router.add_post("/v1/proxy/observations", self._observations)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        """Stop listening (connections are refused) but keep the recorded state for a restart."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _routes(self, request: web.Request) -> web.Response:
        self.route_requests.append(dict(request.headers))
        body = {"routes": self.routes, "refresh_seconds": self.refresh_seconds}
        etag = '"' + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16] + '"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.json_response(body, headers={"ETag": etag})

    async def _exchange(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.exchanges.append(body)
        if self.exchange_delay:
            await asyncio.sleep(self.exchange_delay)
        audience = body["audience"]
        n = self.exchanges_for(audience)
        steps = self.script.get(audience) or [("ok", f"token-{audience}-{{n}}")]
        kind, value = steps[min(n, len(steps)) - 1]
        if kind == "ok":
            return web.json_response(
                {
                    "access_token": value.format(n=n),
                    "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                    "token_type": "Bearer",
                    "expires_in": self.expires_in,
                }
            )
        return web.json_response(value, status=kind)

    async def _heartbeat(self, request: web.Request) -> web.Response:
        self.heartbeats.append(await request.json())
        return web.json_response({"ok": True})

    async def _observations(self, request: web.Request) -> web.Response:
        self.observations.extend(await request.json())
        return web.json_response({"ok": True})
