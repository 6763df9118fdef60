"""Scriptable raw HTTP/1.1 peers for edge-case tests (exact bytes on the wire, both sides)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """An upstream whose connection handling the test writes; counts accepted connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> RawServer:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def read_head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]]:
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = raw.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    return lines[0], headers


async def read_message(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    """One message with a Content-Length or chunked body (decoded), or no body."""
    start, headers = await read_head(reader)
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return start, headers, body
            body += await reader.readexactly(size + 2)
            body = body[:-2]
    n = int(headers.get("content-length", "0"))
    return start, headers, await reader.readexactly(n) if n else b""


async def serve_requests(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, respond: Callable[[str, dict, bytes], bytes]
) -> None:
    """Keep-alive loop: answer each request with respond(start, headers, body) until the peer closes."""
    for _ in range(1000):
        try:
            start, headers, body = await read_message(reader)
        except asyncio.IncompleteReadError:
            return
        writer.write(respond(start, headers, body))
        await writer.drain()
