"""The HTTP/1.1 engine: one asyncio Protocol per app connection, one upstream pool, one timer.

Each app connection reads top to bottom: head → plan (route and destination, proxy/exchange.py) →
credential (cached, or one exchange in flight) → inject → dial or reuse an upstream connection →
send → relay the response in its framing. Framing is validated by proxy/http_framing.py in both
directions; anything malformed is answered with a JSON error and never forwarded. A pooled
connection the upstream had closed is retried once on a fresh one when the request can be
replayed; an upstream 401 on a governed request is replayed once with a fresh credential.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from proxy.credentials import Credential, CredentialCache
from proxy.errors import (
    BadRequest,
    ClientTimeout,
    HeaderTimeout,
    ProxyError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from proxy.exchange import UNGOVERNED, Exchanges, Intercepted, Origin, Plan
from proxy.http_framing import BodyFramer, find_head, framer
from proxy.http_messages import (
    MAX_HEAD,
    Body,
    Request,
    Response,
    error_response,
    parse_request_head,
    serialize_head,
    split_authority,
)
from proxy.metrics import Metrics
from proxy.pool import ConnectionPool, Destination
from proxy.relay import Relay
from proxy.routes import RouteTable
from proxy.timers import Watchdog
from proxy.tls import LeafCertificates
from proxy.upstream import UpstreamConnection

__all__ = ["REPLAY_LIMIT", "ClientConnection", "Engine", "Timeouts"]

REPLAY_LIMIT = 64 * 1024  # bodies up to this size are held so the request can be replayed
_ESTABLISHED = b"HTTP/1.1 200 Connection Established\r\n\r\n"
_HANDSHAKE_TIMEOUT = 10.0
_IDLE, _HEAD, _WAIT, _RESPONSE, _BODY, _DONE = range(6)
_LINGER = 2.0  # seconds an app's input is read and discarded after an error reply
_H2_PREFACE_START = b"PRI * HTTP/2.0"
log = logging.getLogger("sesame.proxy.http")


def _alpn(transport: asyncio.BaseTransport) -> str | None:
    ssl_object = transport.get_extra_info("ssl_object")
    return ssl_object.selected_alpn_protocol() if ssl_object is not None else None


@dataclass(frozen=True, kw_only=True, slots=True)
class Timeouts:
    header: float  # from the first byte of a head to its end
    idle: float  # a kept-alive app connection with no request
    response: float  # from the end of the request to the response head
    stream: float  # a body that makes no progress either way


class Engine:
    """What every app connection shares: routing, credentials, the upstream pool, metrics, limits."""

    def __init__(
        self,
        *,
        exchanges: Exchanges,
        routes: Callable[[], RouteTable],
        credentials: CredentialCache,
        pool: ConnectionPool,
        leaves: LeafCertificates,
        metrics: Metrics,
        observe: Callable[[str, int, bool], None],
        timeouts: Timeouts,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        track: Callable[[ClientConnection, bool], bool],
    ) -> None:
        self.exchanges, self.routes, self.credentials, self.pool = exchanges, routes, credentials, pool
        self.leaves, self.metrics, self.observe, self.timeouts = leaves, metrics, observe, timeouts
        self.spawn, self.track = spawn, track

    def error_reply(self, exc: ProxyError, target: str, *, keep_alive: bool) -> bytes:
        """Count and log a failed request; the JSON error response for the app."""
        self.metrics.request(target, exc.code)
        log.info("request failed", extra={"target": target, "error": exc.code, "reason": exc.message})
        return error_response(exc, keep_alive=keep_alive)


class ClientConnection(asyncio.Protocol):
    """One app connection (plaintext, or decrypted TLS of an intercepted one)."""

    def __init__(self, engine: Engine, origin: Origin) -> None:
        self.e, self.origin = engine, origin
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.phase = _IDLE
        self.closing = False  # the listener is shutting down: close after the current exchange
        self._watchdog: Watchdog | None = None
        self._eof = False
        self._paused_by: set[str] = set()
        self._reset()

    def _reset(self) -> None:
        self.req: Request | None = None
        self.plan: Plan | None = None
        self.cred: Credential | None = None
        self.body: BodyFramer | None = None  # the request body still arriving
        self.held = bytearray()  # request body bytes read so far, while they may still be replayed
        self.streaming = False  # body bytes go straight upstream (not held)
        self.replayable = False  # the whole request is at hand and small enough to send again
        self.up: UpstreamConnection | None = None
        self.reused = False
        self.retried_401 = False
        self.retried_closed = False
        self.responded = False  # a response head went to the app
        self.ready = False  # credential injected (or none needed): the request may go
        self.sent = False  # an upstream connection was taken or is being dialled for it
        self._keep_client = False
        self._head_out = b""  # a response head not yet written

    # app side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.origin is not None and _alpn(transport) == "h2":
            self._to_h2(transport, b"")  # type: ignore[arg-type]
            return
        self.transport = transport  # type: ignore[assignment]
        if not self.e.track(self, True):  # at the connection limit with every connection busy
            self.phase = _DONE
            transport.abort()  # type: ignore[attr-defined]
            return
        self._watchdog = Watchdog(asyncio.get_running_loop(), self._expired)
        self._watchdog.arm(self.e.timeouts.idle)
        if self.buf:  # bytes handed over with the connection
            self._pump()

    def data_received(self, data: bytes) -> None:
        if self.phase == _DONE:
            return  # closing (lingering after an error): the app's bytes are discarded
        if self.req is None and not self.buf and self.transport is not None:
            self._head(data)  # the common case: a new request, read without copying it first
            return
        self.buf += data
        if self.transport is not None:  # None: decrypted before start_tls returned (connection_made)
            self._pump()

    def eof_received(self) -> bool:
        self._eof = True
        if self.req is None or self.phase == _DONE:
            return False
        return True  # half-closed while a response is due: answer, then close

    def connection_lost(self, exc: Exception | None) -> None:
        self.phase = _DONE
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._detach(reuse=False)
        self.buf = bytearray()
        self.held = bytearray()
        self.e.track(self, False)

    def pause_writing(self) -> None:
        if self.up is not None and self.up.transport is not None:
            self.up.transport.pause_reading()  # the app reads slowly: stop reading the upstream

    def resume_writing(self) -> None:
        if self.up is not None and self.up.transport is not None and not self.up.transport.is_closing():
            self.up.transport.resume_reading()

    def shutdown(self) -> None:
        """Listener closing: close now when idle, else right after the current response."""
        self.closing = True
        if self.req is None and self.transport is not None:
            self.transport.close()

    def evictable(self) -> bool:
        """Idle or still sending a head: may be closed to admit a new connection at the limit."""
        return self.phase in (_IDLE, _HEAD)

    def _pause(self, why: str, paused: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        before = bool(self._paused_by)
        if paused:
            self._paused_by.add(why)
        else:
            self._paused_by.discard(why)
        if before != bool(self._paused_by):
            if paused:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def _pump(self) -> None:
        """Act on the buffered bytes: a new head, or body bytes of the request in flight."""
        if self.phase == _DONE:
            return
        if self.req is not None:
            if self.body is not None and not self.body.done:
                self._take_body()
            if len(self.buf) > MAX_HEAD:
                self._pause("pipeline", True)  # pipelined requests wait; don't buffer without bound
            return
        if self.buf:
            self._head(self.buf)

    def _head(self, data: bytes | bytearray) -> None:
        """Parse a request head at the start of `data` (new bytes, or the buffer); the rest is kept."""
        buffered = data is self.buf
        if data[:3] == b"PRI" and self.phase <= _HEAD:
            if data[:14] == _H2_PREFACE_START:  # h2c with prior knowledge
                self.e.track(self, False)
                self._watchdog.cancel()  # type: ignore[union-attr]
                self._to_h2(self.transport, bytes(data) if not buffered else b"")  # type: ignore[arg-type]
                return
        try:
            end = find_head(data, BadRequest)
            if end is None:
                if not buffered:
                    self.buf += data
                if self.phase == _IDLE:
                    self.phase = _HEAD
                    self._watchdog.arm(self.e.timeouts.header)  # type: ignore[union-attr]
                return
            if buffered:
                raw = bytes(data[:end])
                del self.buf[:end]
            elif end < len(data):
                raw = bytes(data[:end])
                self.buf += data[end:]
            else:
                raw = data  # type: ignore[assignment]
            req = parse_request_head(raw)
        except ProxyError as exc:
            self._reject(exc)
            return
        self._begin(req)

    def _reject(self, exc: ProxyError) -> None:
        """A request that cannot be served: answer and close (its framing cannot be trusted)."""
        self.transport.write(self.e.error_reply(exc, UNGOVERNED, keep_alive=False))  # type: ignore[union-attr]
        self._close_lingering()

    def _close_lingering(self) -> None:
        """Close after an error reply as nginx does: send FIN once the reply is out, then read and
        discard what the app is still sending for a while, so the kernel does not reset the
        connection (and destroy the reply) while the app's input is unread."""
        self.phase = _DONE
        self.buf = bytearray()
        transport = self.transport
        assert transport is not None and self._watchdog is not None
        if transport.can_write_eof():
            transport.write_eof()
            self._watchdog.arm(_LINGER)
        else:
            transport.close()

    def _begin(self, req: Request) -> None:
        self.req, self.phase = req, _WAIT  # no timer: the credential and the dial have their own
        if req.method == "CONNECT":
            self._connect_method(req)
            return
        try:
            plan = self.e.exchanges.plan(req, self.origin)
        except ProxyError as exc:
            self._reject(exc)
            return
        self.plan = plan
        self.e.observe(plan.host, plan.port, plan.route is not None)
        self.body = framer(req.body, req.length, BadRequest)
        self._take_body()
        if self.phase == _DONE:
            return
        if not self.body.done:
            self._watchdog.arm(self.e.timeouts.stream)  # type: ignore[union-attr]
        if plan.route is not None:
            cred = self.e.credentials.peek(plan.route.audience)
            if cred is None:
                self.e.spawn(self._fetch_credential())
                return
            self.cred = cred
        self._ready()

    def _take_body(self) -> None:
        """Move the request body's bytes out of the buffer: held for replay, or sent upstream."""
        body, buf = self.body, self.buf
        assert body is not None
        try:
            n = body.feed(buf)
        except ProxyError as exc:
            self._body_error(exc)
            return
        if not n:
            return
        chunk = bytes(buf[:n])
        del buf[:n]
        if self.streaming:
            self.up.transport.write(chunk)  # type: ignore[union-attr]
            if body.done:
                self._request_sent()
            else:
                self._watchdog.arm(self.e.timeouts.stream)  # type: ignore[union-attr]
            return
        self.held += chunk
        if not body.done:
            self._watchdog.arm(self.e.timeouts.stream)  # type: ignore[union-attr]
        if len(self.held) > REPLAY_LIMIT:
            self._pause("dial", True)  # not connected yet: hold no more than this
        if self.ready and not self.sent and not self._waiting_for_body():
            self._send()

    def _body_error(self, exc: ProxyError) -> None:
        if self.up is not None or self.responded:  # part of it went upstream: cut both sides
            self._detach(reuse=False)
            self.e.metrics.request(self.plan.target if self.plan else UNGOVERNED, exc.code)
            self.phase = _DONE
            if not self.responded:
                self.transport.write(error_response(exc, keep_alive=False))  # type: ignore[union-attr]
                self._close_lingering()
            else:
                self.transport.abort()  # type: ignore[union-attr]
            return
        self._reject(exc)

    def _waiting_for_body(self) -> bool:
        """Hold a small governed body until it is whole, so a 401 can be replayed with a new credential."""
        req, body = self.req, self.body
        return bool(
            self.plan is not None
            and self.plan.route is not None
            and req is not None
            and req.body == Body.LENGTH
            and req.length <= REPLAY_LIMIT
            and not req.expect_continue
            and body is not None
            and not body.done
        )

    async def _fetch_credential(self) -> None:
        plan = self.plan
        assert plan is not None and plan.route is not None
        try:
            cred = await self.e.credentials.get(plan.route.audience)
        except ProxyError as exc:
            if self.plan is plan and self.phase != _DONE:
                self._fail(exc)
            return
        if self.plan is not plan or self.phase == _DONE:
            return
        self.cred = cred
        self._ready()

    def _ready(self) -> None:
        """Credential at hand (or none needed): inject and send once a small body is whole."""
        plan, req = self.plan, self.req
        assert plan is not None and req is not None
        if plan.route is not None and not plan.signs_body:
            try:
                plan.apply(req, self.cred.token)  # type: ignore[union-attr]
            except ProxyError as exc:
                self._fail(exc)
                return
        self.ready = True
        if not self._waiting_for_body():
            self._send()

    def _send(self) -> None:
        plan, body = self.plan, self.body
        assert plan is not None and body is not None
        if plan.signs_body:  # a signature over the body: made now, with the body when it is whole
            try:
                plan.apply(self.req, self.cred.token, bytes(self.held) if body.done else None)  # type: ignore[union-attr, arg-type]
            except ProxyError as exc:
                self._fail(exc)
                return
        self.phase, self.sent = _WAIT, True
        up = None if self.retried_closed else self.e.pool.take(plan.dest.key)
        if up is not None:
            self._start_upstream(up, reused=True)  # type: ignore[arg-type]
        else:
            self.e.spawn(self._dial(plan.dest, plan))

    async def _dial(self, dest: Destination, plan: Plan) -> None:
        try:
            up = await self.e.pool.connect(dest, UpstreamConnection)
        except ProxyError as exc:
            if self.plan is plan and self.phase != _DONE:
                self._fail(exc)
            return
        if self.plan is not plan or self.phase == _DONE or self.up is not None:
            self.e.pool.give(up)
            return
        self._start_upstream(up, reused=False)  # type: ignore[arg-type]

    def _start_upstream(self, up: UpstreamConnection, *, reused: bool) -> None:
        req, body = self.req, self.body
        assert req is not None and body is not None
        self.up, self.reused = up, reused
        extra = f"Connection: upgrade\r\nUpgrade: {req.upgrade}\r\n" if req.upgrade else ""
        head = serialize_head(f"{req.method} {req.target} HTTP/1.1", req.headers, extra)
        up.start(self, req.method, head + self.held if self.held else head)
        if self._paused_by:
            self._pause("dial", False)
        if body.done:
            self.replayable = len(self.held) <= REPLAY_LIMIT
            if not self.replayable:
                self.held = bytearray()
            self._request_sent()
            return
        # the rest of the body streams: from here on the request can no longer be replayed
        self.streaming, self.held = True, bytearray()
        self.phase = _BODY
        self._watchdog.arm(self.e.timeouts.stream)  # type: ignore[union-attr]
        if self.buf:
            self._take_body()

    def _request_sent(self) -> None:
        if not self.responded:
            self.phase = _RESPONSE
            self._watchdog.arm(self.e.timeouts.response)  # type: ignore[union-attr]

    # upstream side (proxy/upstream.ResponseSink)

    def response_head(self, resp: Response) -> bool:
        req, plan = self.req, self.plan
        assert req is not None and plan is not None
        if resp.status == 101:
            if not req.upgrade:
                self.upstream_failed(UpstreamProtocolError("the upstream switched protocols unasked"))
                return False
            self._upgrade(resp)
            return False
        if resp.status < 200:
            if req.version == "HTTP/1.1":
                self.transport.write(serialize_head(f"HTTP/1.1 {resp.status} {resp.reason}", resp.headers))  # type: ignore[union-attr]
            return True
        if resp.status == 401 and plan.route is not None and self.replayable and not self.retried_401:
            self._replay_401()
            return False
        self.responded = True
        self.phase = _BODY
        keep = req.keep_alive and not self.closing and resp.body != Body.CLOSE and self.body is not None
        close = "" if keep else "Connection: close\r\n"
        # written with the first body bytes (or alone, if none are at hand): one send per response
        self._head_out = serialize_head(f"HTTP/1.1 {resp.status} {resp.reason}", resp.headers, close)
        self._keep_client = keep
        return True

    def response_body(self, data: bytes, done: bool) -> None:
        if self._head_out:
            data, self._head_out = self._head_out + data, b""
        if data:
            self.transport.write(data)  # type: ignore[union-attr]
        if done:
            self._finish()
        else:
            self._watchdog.arm(self.e.timeouts.stream)  # type: ignore[union-attr]

    def upstream_failed(self, exc: ProxyError) -> None:
        if self.responded:
            self._interrupted("response_interrupted")
        else:
            self._fail(exc)

    def upstream_lost(self, *, replayable: bool) -> None:
        if self.phase == _DONE or self.req is None:
            return
        if self.responded:
            self._interrupted("response_interrupted")
        elif replayable and self.reused and self.replayable and not self.retried_closed:
            self.up = None  # a pooled connection the upstream had closed: once more on a new one
            self.retried_closed = True
            self._send()
        else:
            self._fail(UpstreamUnreachable("the upstream closed the connection without a response"))

    def upstream_paused(self, paused: bool) -> None:
        self._pause("upstream", paused)

    def _finish(self) -> None:
        body = self.body
        request_whole = body is not None and body.done
        up = self.up
        self._detach(reuse=up is not None and up.keep and request_whole)
        self.e.metrics.request(self.plan.target, "forwarded")  # type: ignore[union-attr]
        self._end(self._keep_client and request_whole and not self._eof and not self.closing)

    def _end(self, keep: bool) -> None:
        self._reset()
        if not keep:
            self.phase = _DONE
            self.transport.close()  # type: ignore[union-attr]
            return
        self.phase = _IDLE
        self.e.track(self, True)
        self._watchdog.arm(self.e.timeouts.idle)  # type: ignore[union-attr]
        if self._paused_by:
            self._pause("pipeline", False)
            self._pause("upstream", False)
        if self.buf:
            self._pump()

    def _detach(self, *, reuse: bool) -> None:
        up, self.up = self.up, None
        if up is None:
            return
        up.detach()
        if reuse:
            self.e.pool.give(up)
        else:
            up.close()

    def _fail(self, exc: ProxyError) -> None:
        """Answer with the error's JSON; keep the connection only if the request was read whole."""
        self._detach(reuse=False)
        req = self.req
        keep = bool(req and req.keep_alive and self.body is not None and self.body.done and not self._eof
                    and not self.closing and not self.streaming)
        target = self.plan.target if self.plan is not None else UNGOVERNED
        self.transport.write(self.e.error_reply(exc, target, keep_alive=keep))  # type: ignore[union-attr]
        self._end(keep)

    def _interrupted(self, outcome: str) -> None:
        self._detach(reuse=False)
        self.e.metrics.request(self.plan.target if self.plan else UNGOVERNED, outcome)
        self.phase = _DONE
        self.transport.abort()  # type: ignore[union-attr]

    def _replay_401(self) -> None:
        """Drop the credential the upstream refused, fetch a new one and send the request once more."""
        plan, cred = self.plan, self.cred
        assert plan is not None and plan.route is not None and cred is not None
        self._detach(reuse=False)
        self.retried_401 = True
        self.e.credentials.drop(plan.route.audience, cred.token)
        self.cred = None
        self.phase, self.ready, self.sent = _WAIT, False, False
        self.e.spawn(self._fetch_credential())

    def _expired(self) -> None:
        phase = self.phase
        if phase == _IDLE or phase == _DONE:  # _DONE: the lingering close is over
            self.phase = _DONE
            self.transport.abort()  # type: ignore[union-attr]
        elif phase == _HEAD:
            self._reject(HeaderTimeout(f"the request head took longer than {self.e.timeouts.header:g}s"))
        elif phase == _WAIT and self.body is not None and not self.body.done and not self.sent:
            self._fail(ClientTimeout(f"the request body stalled for {self.e.timeouts.stream:g}s"))
        elif phase == _RESPONSE:
            self._fail(UpstreamTimeout(f"no response from the upstream within {self.e.timeouts.response:g}s"))
        elif phase == _BODY:
            if not self.responded and self.body is not None and not self.body.done:
                self._fail(ClientTimeout(
                    f"the request body stalled for {self.e.timeouts.stream:g}s; the connection was closed"
                ))
            else:
                self._interrupted("stream_idle_timeout")  # the upstream or the app stopped moving the body

    # protocol switches: CONNECT (explicit mode) and 101 upgrades

    def _connect_method(self, req: Request) -> None:
        if self.origin is not None:
            self._reject(BadRequest("CONNECT inside an intercepted or redirected connection"))
            return
        try:
            host, port = split_authority(req.target, 443)
        except ProxyError as exc:
            self._reject(exc)
            return
        if self.buf:
            self._reject(BadRequest("data after CONNECT before the tunnel was established"))
            return
        route = self.e.routes().lookup("tls", host, port)
        plain = self.e.routes().lookup("http", host, port) if route is None else None
        self.e.observe(host, port, route is not None or plain is not None)
        self.phase = _DONE  # this protocol object is done: the transport moves on
        self._watchdog.cancel()  # type: ignore[union-attr]
        self.transport.pause_reading()  # type: ignore[union-attr]
        if plain is not None:  # a governed plaintext route (e.g. gRPC h2c): served inside the tunnel
            self._plaintext_tunnel(Intercepted(plain, port))
        elif route is None:
            self.e.spawn(self._tunnel(host, port))
        else:
            self.e.spawn(self._intercept(Intercepted(route, port)))

    async def _intercept(self, origin: Intercepted) -> None:
        """Terminate the app's TLS for a governed CONNECT with a pod-CA leaf for the route's host."""
        transport = self.transport
        assert transport is not None
        ctx = await self.e.leaves.context_for(origin.route.host)
        if transport.is_closing():
            return
        conn = ClientConnection(self.e, origin)
        transport.write(_ESTABLISHED)
        try:
            tls = await asyncio.get_running_loop().start_tls(
                transport, conn, ctx, server_side=True, ssl_handshake_timeout=_HANDSHAKE_TIMEOUT
            )
        except (ssl.SSLError, ConnectionError, TimeoutError, OSError):
            self.e.metrics.request(origin.route.name, "client_tls_failed")
            transport.abort()
            return
        finally:
            self.e.track(self, False)  # the connection lives on as `conn` (or not at all)
        if tls is None:
            return
        conn.connection_made(tls)

    def _plaintext_tunnel(self, origin: Intercepted) -> None:
        """CONNECT to a governed plaintext route: the requests inside (HTTP/1.1, or h2c with prior
        knowledge) are served as on an intercepted connection; nothing is relayed blind."""
        transport = self.transport
        assert transport is not None
        self.e.track(self, False)
        transport.write(_ESTABLISHED)
        conn = ClientConnection(self.e, origin)
        transport.set_protocol(conn)
        conn.connection_made(transport)
        transport.resume_reading()

    def _to_h2(self, transport: asyncio.Transport, first: bytes) -> None:
        """The app speaks HTTP/2 (ALPN h2, or the h2c preface): hand the connection to the HTTP/2
        engine, imported only now (proxy/h2_engine.py)."""
        from proxy.h2_engine import H2Connection

        self.phase = _DONE
        pending = first or bytes(self.buf)
        self.buf = bytearray()
        conn = H2Connection(self.e, self.origin)
        transport.set_protocol(conn)
        conn.connection_made(transport)
        if pending:
            conn.data_received(pending)

    async def _tunnel(self, host: str, port: int) -> None:
        """CONNECT to an ungoverned host: bytes both ways, nothing decrypted, nothing injected."""
        transport = self.transport
        assert transport is not None
        relay = Relay(on_close=lambda: self.e.track(self, False))
        try:
            await self.e.pool.connect(Destination(host, port), lambda: relay.upstream)  # type: ignore[arg-type,return-value]
        except ProxyError as exc:
            transport.write(self.e.error_reply(exc, UNGOVERNED, keep_alive=False))
            transport.close()
            relay.close()
            return
        if transport.is_closing():
            relay.close()
            return
        transport.write(_ESTABLISHED)
        self.e.metrics.request(UNGOVERNED, "tunneled")
        relay.attach_client(transport)

    def _upgrade(self, resp: Response) -> None:
        """101 Switching Protocols (WebSocket): both connections become a byte relay."""
        up, req = self.up, self.req
        assert up is not None and req is not None and self.transport is not None
        self.up = None
        up.detach()
        self.transport.write(serialize_head(f"HTTP/1.1 101 {resp.reason}", resp.headers,
                                            f"Connection: upgrade\r\nUpgrade: {resp.upgrade}\r\n"))
        self.e.metrics.request(self.plan.target, "upgraded")  # type: ignore[union-attr]
        self.phase = _DONE
        self._watchdog.cancel()  # type: ignore[union-attr]
        relay = Relay(on_close=lambda: self.e.track(self, False))
        pending, up.pending = up.pending, b""
        up.transport.set_protocol(relay.upstream)  # type: ignore[union-attr]
        relay.upstream.connection_made(up.transport)  # type: ignore[arg-type]
        if pending:
            relay.upstream.data_received(pending)
        buffered = bytes(self.buf)
        self.buf.clear()
        relay.attach_client(self.transport, buffered)
