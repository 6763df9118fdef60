"""HTTP/1.1 on the wire: head parsing, message framing (RFC 9112), body relays and byte tunnels."""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus

from proxy.errors import BadRequest, ProxyError, UpstreamProtocolError

__all__ = [
    "CHUNK",
    "MAX_HEAD",
    "Body",
    "Request",
    "Response",
    "error_response",
    "parse_request",
    "parse_response",
    "read_body",
    "read_head",
    "relay_body",
    "serialize_head",
    "tunnel",
]

MAX_HEAD = 64 * 1024
CHUNK = 64 * 1024
# Hop-by-hop fields (RFC 9110 §7.6.1) plus the proxy's own; Transfer-Encoding is kept because
# bodies are relayed in the framing they arrived in.
_CONNECTION_OPTIONS = frozenset({"close", "keep-alive", "upgrade"})
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "upgrade",
    }
)


class Body:
    """Message body framing."""

    NONE, LENGTH, CHUNKED, CLOSE = range(4)


class Request:
    __slots__ = (
        "body",
        "expect_continue",
        "headers",
        "keep_alive",
        "length",
        "method",
        "target",
        "upgrade",
        "version",
    )

    def __init__(self, method: str, target: str, version: str, headers: list[tuple[str, str]]) -> None:
        self.method, self.target, self.version, self.headers = method, target, version, headers
        self.body, self.length, self.keep_alive, self.expect_continue, self.upgrade = (
            Body.NONE,
            0,
            True,
            False,
            "",
        )


class Response:
    __slots__ = ("body", "headers", "keep_alive", "length", "reason", "status", "upgrade", "version")

    def __init__(self, version: str, status: int, reason: str, headers: list[tuple[str, str]]) -> None:
        self.version, self.status, self.reason, self.headers = version, status, reason, headers
        self.body, self.length, self.keep_alive, self.upgrade = Body.NONE, 0, True, ""


async def read_head(reader: asyncio.StreamReader, error: type[ProxyError] = BadRequest) -> bytes | None:
    """The bytes up to and including the blank line; None on a clean EOF before any byte."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise error("connection closed inside a message head") from exc
    except asyncio.LimitOverrunError as exc:
        raise error(f"message head larger than {MAX_HEAD} bytes") from exc


def _split_head(raw: bytes, error: type[ProxyError]) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """→ (start-line parts, lower-cased names, headers as sent) in one pass."""
    lines = raw.lstrip(b"\r\n").decode("latin-1").split("\r\n")
    start = lines[0].split(" ", 2)
    names: list[str] = []
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or line[0] in " \t" or name[-1] in " \t":
            raise error(f"malformed header line {line[:40]!r}")
        names.append(name.lower())
        headers.append((name, value.strip()))
    return start, names, headers


_FRAMING = frozenset(
    {"connection", "proxy-connection", "transfer-encoding", "content-length", "upgrade", "expect"}
)
_SPECIAL = _FRAMING | HOP_BY_HOP


def _frame(
    msg: Request | Response, names: list[str], headers: list[tuple[str, str]], error: type[ProxyError]
) -> None:
    """Set framing, keep-alive and upgrade from the headers and strip hop-by-hop fields."""
    conn_tokens: set[str] = set()
    te = cl = None
    kept = headers
    if not _SPECIAL.isdisjoint(names):
        kept = []
        for lname, header in zip(names, headers, strict=True):
            if lname in _FRAMING:
                value = header[1]
                if lname == "connection" or lname == "proxy-connection":
                    conn_tokens.update(t.strip().lower() for t in value.split(","))
                elif lname == "content-length":
                    if cl is not None and cl != value:
                        raise error("conflicting Content-Length headers")
                    cl = value
                elif lname == "transfer-encoding":
                    te = value.lower() if te is None else f"{te}, {value.lower()}"
                elif lname == "upgrade":
                    msg.upgrade = value
                elif lname == "expect" and isinstance(msg, Request):
                    msg.expect_continue = value.lower() == "100-continue"
            if lname not in HOP_BY_HOP:
                kept.append(header)
        named = conn_tokens - _CONNECTION_OPTIONS
        if named:  # Connection names other fields: they are hop-by-hop too
            kept = [h for h in kept if h[0].lower() not in named]
    msg.headers = kept
    if "upgrade" not in conn_tokens:
        msg.upgrade = ""
    msg.keep_alive = msg.version == "HTTP/1.1" and "close" not in conn_tokens
    if te is not None:
        if cl is not None:
            raise error("both Transfer-Encoding and Content-Length")
        msg.body = Body.CHUNKED if te.rsplit(",", 1)[-1].strip() == "chunked" else Body.CLOSE
        if msg.body == Body.CLOSE and isinstance(msg, Request):
            raise error("request Transfer-Encoding must end in chunked")
    elif cl is not None:
        if not cl.isdigit():
            raise error("invalid Content-Length")
        msg.length = int(cl)
        msg.body = Body.LENGTH if msg.length else Body.NONE
    elif isinstance(msg, Response):
        msg.body = Body.CLOSE


def parse_request(raw: bytes) -> Request:
    start, names, headers = _split_head(raw, BadRequest)
    if len(start) != 3 or not start[2].startswith("HTTP/1."):
        raise BadRequest(f"malformed request line {start!r:.60}")
    req = Request(start[0], start[1], start[2], headers)
    _frame(req, names, headers, BadRequest)
    return req


def parse_response(raw: bytes, method: str) -> Response:
    start, names, headers = _split_head(raw, UpstreamProtocolError)
    if len(start) < 2 or not start[0].startswith("HTTP/1.") or not start[1].isdigit():
        raise UpstreamProtocolError(f"malformed status line {start!r:.60}")
    resp = Response(start[0], int(start[1]), start[2] if len(start) > 2 else "", headers)
    _frame(resp, names, headers, UpstreamProtocolError)
    if method == "HEAD" or resp.status < 200 or resp.status in (204, 304):
        resp.body = Body.NONE
    return resp


def serialize_head(start_line: str, headers: list[tuple[str, str]], extra: str = "") -> bytes:
    return (start_line + "\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers) + extra + "\r\n").encode(
        "latin-1"
    )


def error_response(exc: ProxyError, *, keep_alive: bool) -> bytes:
    body = json.dumps(exc.body()).encode()
    phrase = HTTPStatus(exc.status).phrase
    head = (
        f"HTTP/1.1 {exc.status} {phrase}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        + ("" if keep_alive else "Connection: close\r\n")
        + "\r\n"
    )
    return head.encode() + body


async def _relay_length(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int, idle: float | None, first: bytes = b""
) -> None:
    """Copy n bytes; `first` (a message head) goes out in the same send as the first chunk."""
    while n > 0:
        async with asyncio.timeout(idle):  # no progress either way for `idle` s: TimeoutError
            data = await reader.read(min(n, CHUNK))
            if not data:
                raise asyncio.IncompleteReadError(b"", n)
            n -= len(data)
            if first:
                data, first = first + data, b""
            writer.write(data)
            await writer.drain()


async def _relay_chunked(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idle: float | None
) -> None:
    while True:
        async with asyncio.timeout(idle):
            line = await reader.readuntil(b"\r\n")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError as exc:
            raise UpstreamProtocolError("invalid chunk size") from exc
        writer.write(line)
        if size == 0:
            async with asyncio.timeout(idle):
                while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                    writer.write(trailer)
                writer.write(b"\r\n")
                await writer.drain()
            return
        await _relay_length(reader, writer, size + 2, idle)


async def _relay_close(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idle: float | None
) -> None:
    while True:
        async with asyncio.timeout(idle):
            data = await reader.read(CHUNK)
            if not data:
                return
            writer.write(data)
            await writer.drain()


async def relay_body(
    body: int,
    length: int,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    head: bytes = b"",
    *,
    idle: float | None = None,
) -> None:
    """Stream one body (after `head`) from reader to writer in its own framing; one chunk in memory.

    TimeoutError when neither a read nor a write makes progress for `idle` seconds (a stalled peer).
    """
    if body == Body.LENGTH:
        await _relay_length(reader, writer, length, idle, head)
        return
    if head:
        writer.write(head)
    if body == Body.CHUNKED:
        await _relay_chunked(reader, writer, idle)
    elif body == Body.CLOSE:
        await _relay_close(reader, writer, idle)


async def read_body(body: int, length: int, reader: asyncio.StreamReader, limit: int) -> bytes:
    """A whole (small) body in memory, for the proxy's own control-plane calls; at most `limit` bytes."""
    if body == Body.LENGTH:
        if length > limit:
            raise UpstreamProtocolError(f"body larger than {limit} bytes")
        return await reader.readexactly(length)
    if body == Body.CLOSE:
        return await reader.read(limit)
    if body == Body.NONE:
        return b""
    parts: list[bytes] = []
    total = 0
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
        total += size
        if total > limit:
            raise UpstreamProtocolError(f"body larger than {limit} bytes")
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return b"".join(parts)
        parts.append((await reader.readexactly(size + 2))[:-2])


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.transport.abort()


async def tunnel(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter], b: tuple[asyncio.StreamReader, asyncio.StreamWriter]
) -> None:
    """Copy bytes both ways until both sides are done, then close both."""
    try:
        await asyncio.gather(_pipe(a[0], b[1]), _pipe(b[0], a[1]))
    finally:
        a[1].close()
        b[1].close()
