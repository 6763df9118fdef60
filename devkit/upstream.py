"""A small real HTTPS API that requires an API key: the governed upstream of tests and `make demo`.

`python -m devkit.upstream --api-key KEY --cert C --key K --port 0` prints `{"port": N}` when ready.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import ssl
import sys
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

__all__ = ["ApiServer", "Seen"]


@dataclass
class Seen:
    """What the API received: enough for tests to assert the credential (and nothing else) arrived."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    authorized: bool


@dataclass
class ApiServer:
    """Accepts the key as `Bearer KEY`, Basic `user:KEY`, header `X-Api-Key`, or query `api_key`."""

    api_key: str
    host: str = "127.0.0.1"
    port: int = 0
    ssl_context: ssl.SSLContext | None = None
    seen: list[Seen] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    def authorized(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        if auth == f"Bearer {self.api_key}" or request.headers.get("X-Api-Key") == self.api_key:
            return True
        if auth.startswith("Basic "):
            try:
                return base64.b64decode(auth[6:]).decode().partition(":")[2] == self.api_key
            except ValueError:
                return False
        return request.query.get("api_key") == self.api_key

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        ok = self.authorized(request)
        body = await request.read()
        self.seen.append(Seen(request.method, request.path, dict(request.query), dict(request.headers), ok))
        if not ok:
            return web.json_response({"error": "invalid_api_key"}, status=401)
        return web.json_response(
            {
                "ok": True,
                "method": request.method,
                "path": request.path,
                "body_bytes": len(body),
                "message": "hello from the demo API",
            }
        )

    async def start(self) -> ApiServer:
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://{self.host}:{self.port}"


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


async def _serve(args: argparse.Namespace) -> None:
    ctx = server_context(Path(args.cert), Path(args.key)) if args.cert else None
    api = await ApiServer(args.api_key, args.host, args.port, ctx).start()
    print(json.dumps({"port": api.port}), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await api.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devkit.upstream")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
