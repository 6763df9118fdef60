"""A TLS server presenting a rendered certificate, to prove which clients can verify it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from devkit.upstream import server_context


@asynccontextmanager
async def tls_ok_server(cert_pem: bytes, key_pem: bytes, workdir: Path) -> AsyncIterator[int]:
    """Serve on 127.0.0.1:<ephemeral> with this certificate; every connection reads b"ok". Yields the port."""
    (workdir / "tls.crt").write_bytes(cert_pem)
    (workdir / "tls.key").write_bytes(key_pem)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    ssl_context = server_context(workdir / "tls.crt", workdir / "tls.key")
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ssl_context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()
