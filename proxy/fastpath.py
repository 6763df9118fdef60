"""The fast path: simple HTTP/1.1 exchanges served in protocol callbacks, with no task or stream.

A request with no body (or a small Content-Length body already received), to a host whose credential
is cached, answered by a final response with a Content-Length (or no body), is handled here:
accept → classify → credential → inject → forward → relay, all in `data_received`. Everything else
(CONNECT, upgrades, 100-continue, streamed or chunked bodies, credential misses, interim, chunked or
close-delimited responses, an upstream 401 to replay) is handed to the streams Forwarder
(proxy/http1.py) together with the bytes read so far. Same parsing, routing and injection code.
This module is the client side; proxy/upstream_protocol.py frames the upstream's responses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from proxy.credentials import Credential
from proxy.errors import BadRequest, ProxyError, UpstreamTimeout, UpstreamUnreachable
from proxy.http1 import REPLAY_LIMIT, UNGOVERNED, Forwarder, Origin
from proxy.pool import ConnectionPool, Destination, Upstream
from proxy.routes import Route
from proxy.timers import Watchdog
from proxy.upstream_protocol import UpstreamConnection
from proxy.wire import MAX_HEAD, Body, Request, Response, parse_request, serialize_head

__all__ = ["ClientConnection", "SlowPath"]

log = logging.getLogger("sesame.proxy.http")


class SlowPath(Protocol):
    """Called with the client's streams when a connection leaves the fast path (or resumes an exchange).

    `retried_401`: the first request is a replay after an upstream 401 (see Forwarder.serve)."""

    def __call__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, retried_401: bool = False
    ) -> Coroutine[Any, Any, None]: ...


Spawn = Callable[[Coroutine[Any, Any, None]], None]
_IDLE, _RESPONSE, _BODY = range(3)


class ClientConnection(asyncio.Protocol):
    """One app connection on the fast path (see the module docstring)."""

    def __init__(
        self,
        forwarder: Forwarder,
        pool: ConnectionPool,
        origin: Origin,
        *,
        slow_path: SlowPath,
        spawn: Spawn,
        on_close: Callable[[ClientConnection], None],
    ) -> None:
        self.fwd, self.pool, self.origin = forwarder, pool, origin
        self._slow_path, self._spawn, self._on_close = slow_path, spawn, on_close
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.streams: asyncio.StreamWriter | None = None  # the plaintext writer under a TLS transport
        self.closing = False  # the listener is shutting down: close after the current exchange
        self._handed_off = False
        self._paused = False
        self._eof = False
        self._phase = _IDLE
        self._watchdog: Watchdog | None = None
        # the exchange in flight
        self._req: Request | None = None
        self._raw = b""  # the request as received, replayed to the slow path when needed
        self._out = b""
        self._route: Route | None = None
        self._cred: Credential | None = None
        self._target = UNGOVERNED
        self._up: UpstreamConnection | None = None
        self._reused = False

    # client side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.fwd.metrics.connections.inc()
        self._watchdog = Watchdog(asyncio.get_running_loop(), self._expired)
        self._watchdog.arm(self.fwd.client_idle_timeout)
        if self.buf:  # bytes decrypted before start_tls returned
            self._next(self._take_buffer())

    def data_received(self, data: bytes) -> None:
        if self._req is None and self.transport is not None:
            self._next(data if not self.buf else self._take_buffer(data))
            return
        self.buf += data
        if len(self.buf) > MAX_HEAD and not self._paused and self.transport is not None:
            self._paused = True  # pipelined requests wait; don't buffer without bound
            self.transport.pause_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        self._eof = True
        return self._req is not None  # half-closed while a response is due: answer, then close

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handed_off:
            return
        self._req = None  # nothing more is written to this connection
        self.fwd.metrics.connections.dec()
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._detach_upstream(reuse=False)
        self._on_close(self)

    def pause_writing(self) -> None:
        if self._up is not None and self._up.transport is not None:
            self._up.transport.pause_reading()  # the app reads slowly: stop reading the upstream

    def resume_writing(self) -> None:
        if self._up is not None and self._up.transport is not None:
            self._up.transport.resume_reading()

    def shutdown(self) -> None:
        """Listener closing: close now when idle, else right after the current response."""
        self.closing = True
        if self._req is None and self.transport is not None:
            self.transport.close()

    def _take_buffer(self, more: bytes = b"") -> bytes:
        self.buf += more
        data = bytes(self.buf)
        self.buf.clear()
        return data

    def _next(self, data: bytes) -> None:
        """Serve the request at the start of `data` (all unserved bytes) if it is complete and simple;
        hand the connection off otherwise. Bytes not consumed stay in self.buf."""
        end = data.find(b"\r\n\r\n")
        if end < 0:
            self.buf += data
            if len(data) > MAX_HEAD:
                self._hand_off()  # the slow path answers 400
            return
        raw = data[: end + 4]
        try:
            req = parse_request(raw)
        except BadRequest:
            self._hand_off(data)
            return
        if req.method == "CONNECT" or req.upgrade or req.expect_continue or req.body == Body.CHUNKED:
            self._hand_off(data)
            return
        size = end + 4
        if req.body == Body.LENGTH:
            if req.length > REPLAY_LIMIT:
                self._hand_off(data)
                return
            size += req.length
            if len(data) < size:
                self.buf += data
                return  # the rest of a small body is on its way
            raw = data[:size]
        try:
            route, dest, host, port = self.fwd.resolve(req, self.origin)
        except BadRequest:
            self._hand_off(data)
            return
        cred = None
        if route is not None:
            cred = self.fwd.credentials.peek(route.audience)
            if cred is None:
                self._hand_off(data)  # one exchange, awaited by the slow path
                return
            req.target = self.fwd.injector(route)(req.headers, req.target, cred.token)
        if len(data) > size:
            self.buf += data[size:]  # pipelined: served after this response
        self.fwd.observe(host, port, route is not None)
        self._req, self._raw, self._route, self._cred = req, raw, route, cred
        self._target = route.name if route is not None else UNGOVERNED
        self._out = serialize_head(f"{req.method} {req.target} HTTP/1.1", req.headers) + raw[end + 4 :]
        self._phase = _RESPONSE
        self._watchdog.arm(self.fwd.response_timeout)  # type: ignore[union-attr]
        up = self.pool.take(dest.key)
        if up is not None:
            self._send(up, reused=True)  # type: ignore[arg-type]
        else:
            self._spawn(self._connect(dest))

    async def _connect(self, dest: Destination) -> None:
        try:
            up = await self.pool.connect(dest, UpstreamConnection)
        except ProxyError as exc:
            if self._req is not None and not self._handed_off:
                self._fail(exc)
            return
        if self._req is None or self._handed_off or self.transport is None or self.transport.is_closing():
            self.pool.give(up)
            return
        self._send(up, reused=False)  # type: ignore[arg-type]

    def _send(self, up: UpstreamConnection, *, reused: bool) -> None:
        self._up, self._reused = up, reused
        up.send(self, self._req.method, self._out)  # type: ignore[union-attr]

    # upstream side (called by UpstreamConnection: see proxy/upstream_protocol.ResponseSink)

    def response_head(self, resp: Response, raw: bytes, rest: bytes) -> bytes | None:
        if resp.status == 401 and self._cred is not None:
            self._replay_after_401()
            return None
        if resp.status < 200 or (resp.body != Body.LENGTH and resp.body != Body.NONE):
            self._resume_slow(raw + rest)  # interim, chunked or close-delimited: streams relay it
            return None
        self._phase = _BODY
        close = "" if self._req.keep_alive and not self.closing else "Connection: close\r\n"  # type: ignore[union-attr]
        return serialize_head(f"HTTP/1.1 {resp.status} {resp.reason}", resp.headers, close)

    def response_body(self, data: bytes, done: bool) -> None:
        self.transport.write(data)  # type: ignore[union-attr]
        if done:
            self._finish()
        else:
            self._watchdog.arm(self.fwd.stream_idle_timeout)  # type: ignore[union-attr]

    def upstream_failed(self, exc: ProxyError) -> None:
        self._fail(exc)

    def upstream_lost(self, *, mid_body: bool, replayable: bool) -> None:
        if mid_body:
            self._interrupted("response_interrupted")
        elif self._reused and replayable:
            self._replay()  # a pooled connection the upstream had closed: replay on a new one
        else:
            self._fail(UpstreamUnreachable("the upstream closed the connection without a response"))

    def _finish(self) -> None:
        self._detach_upstream(reuse=self._up.keep)  # type: ignore[union-attr]
        self.fwd.metrics.request(self._target, "forwarded")
        keep = self._req.keep_alive and not self._eof and not self.closing  # type: ignore[union-attr]
        self._end_exchange(keep)

    def _end_exchange(self, keep: bool) -> None:
        self._req = self._route = self._cred = None
        self._raw = self._out = b""
        if not keep:
            self.transport.close()  # type: ignore[union-attr]
            return
        self._phase = _IDLE
        self._watchdog.arm(self.fwd.client_idle_timeout)  # type: ignore[union-attr]
        if self._paused:
            self._paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        if self.buf:
            self._next(self._take_buffer())

    def _detach_upstream(self, *, reuse: bool) -> None:
        up, self._up = self._up, None
        if up is None:
            return
        up.detach()
        if reuse:
            self.pool.give(up)
        else:
            up.close()

    def _fail(self, exc: ProxyError) -> None:
        """Answer with the error's JSON; the request was read whole, so the connection may stay."""
        self._detach_upstream(reuse=False)
        keep = self._req.keep_alive and not self._eof and not self.closing  # type: ignore[union-attr]
        self.transport.write(self.fwd.error_reply(exc, self._target, keep_alive=keep))  # type: ignore[union-attr]
        self._end_exchange(keep)

    def _interrupted(self, outcome: str) -> None:
        self._detach_upstream(reuse=False)
        self.fwd.metrics.request(self._target, outcome)
        self.transport.abort()  # type: ignore[union-attr]

    def _expired(self) -> None:
        if self._phase == _IDLE:
            self.transport.abort()  # type: ignore[union-attr]
        elif self._phase == _RESPONSE:
            timeout = self.fwd.response_timeout
            self._fail(UpstreamTimeout(f"no response from the upstream within {timeout:g}s"))
        else:
            self._interrupted("stream_idle_timeout")  # the upstream or the app stopped moving the body

    # hand-offs to the streams forwarder

    def _streams(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Move the client transport to a StreamReader/Writer holding the unread bytes."""
        self._handed_off = True
        self._watchdog.cancel()  # type: ignore[union-attr]
        reader, writer = streams_for(self.transport, bytes(self.buf))  # type: ignore[arg-type]
        self.buf.clear()
        if self._paused:
            self.transport.resume_reading()  # type: ignore[union-attr]
        self.fwd.metrics.connections.dec()  # counted again by the slow task while it runs
        self._on_close(self)
        return reader, writer

    def _spawn_slow(self, coro: Coroutine[Any, Any, None]) -> None:
        gauge, streams = self.fwd.metrics.connections, self.streams

        async def counted() -> None:
            held = streams  # StreamWriter.__del__ must not close the socket under a TLS transport
            gauge.inc()
            try:
                await coro
            finally:
                gauge.dec()
                del held

        self._spawn(counted())

    def _hand_off(self, unserved: bytes = b"") -> None:
        self.buf[:0] = unserved
        reader, writer = self._streams()
        self._spawn_slow(self._slow_path(reader, writer))

    def _replay(self, *, retried_401: bool = False) -> None:
        """Give the request back to the slow path as received (it routes, injects and sends again)."""
        self._detach_upstream(reuse=False)
        self.buf[:0] = self._raw
        self._req = None
        reader, writer = self._streams()
        self._spawn_slow(self._slow_path(reader, writer, retried_401=retried_401))

    def _replay_after_401(self) -> None:
        self.fwd.credentials.drop(self._route.audience, self._cred.token)  # type: ignore[union-attr]
        self._replay(retried_401=True)

    def _resume_slow(self, upstream_bytes: bytes) -> None:
        """The response needs streams: move both connections over and let the Forwarder relay it."""
        up = self._up
        assert up is not None and self._req is not None
        self._up, up.client = None, None
        ureader, uwriter = streams_for(up.transport, upstream_bytes)  # type: ignore[arg-type]
        conn = Upstream(up.key, ureader, uwriter)
        req, target = self._req, self._target
        reader, writer = self._streams()
        fwd, slow_path = self.fwd, self._slow_path

        async def resume() -> None:
            if await fwd.resume(req, conn, reader, writer, target):
                await slow_path(reader, writer)
            else:
                writer.close()

        self._spawn_slow(resume())


def streams_for(
    transport: asyncio.Transport, buffered: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Attach a StreamReader/Writer to a live transport, with `buffered` bytes already read."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_HEAD, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    if buffered:
        reader.feed_data(buffered)
    if transport.is_closing():
        reader.feed_eof()
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)
