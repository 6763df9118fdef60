"""The admin listener: /healthz, /readyz, /metrics and POST /quitquitquit (graceful exit for Jobs)."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from proxy.errors import ProxyError
from proxy.identity import TokenFile
from proxy.metrics import Metrics

__all__ = ["AdminServer"]


def _is_loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


class AdminServer:
    """Serves probes and metrics on the admin address; `quit` is set by POST /quitquitquit."""

    def __init__(
        self,
        *,
        address: tuple[str, int],
        metrics: Metrics,
        token: TokenFile,
        routes_loaded: Callable[[], bool],
        quit_event: asyncio.Event,
    ) -> None:
        self._address = address
        self._metrics, self._token, self._routes_loaded, self._quit = (
            metrics,
            token,
            routes_loaded,
            quit_event,
        )
        self._runner: web.AppRunner | None = None
        self.address = address

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_handler)
        app.router.add_post("/quitquitquit", self._quitquitquit)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._address[0], self._address[1], reuse_address=True)
        await site.start()
        self.address = site._server.sockets[0].getsockname()[:2]  # type: ignore[union-attr]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _request: web.Request) -> web.Response:
        checks: dict[str, str] = {"routes": "ok" if self._routes_loaded() else "not_loaded"}
        try:
            self._token.read()
            checks["token"] = "ok"
        except ProxyError as exc:
            checks["token"] = exc.code
        ready = all(v == "ok" for v in checks.values())
        return web.json_response(
            {"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503
        )

    async def _metrics_handler(self, _request: web.Request) -> web.Response:
        body = generate_latest(self._metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _quitquitquit(self, request: web.Request) -> web.Response:
        if not _is_loopback(request.remote):  # the admin port may face the kubelet; quitting is local only
            return web.json_response({"error": "forbidden", "message": "loopback only"}, status=403)
        self._quit.set()
        return web.json_response({"status": "quitting"})
