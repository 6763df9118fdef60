"""The HTTP/2 engine: one asyncio Protocol per app connection that negotiated h2 (ALPN or h2c).

A second framing over the same exchange logic as proxy/engine.py: each stream's HEADERS become the
`Request` that `Exchanges.plan` takes (method, `:path`, `:authority` as Host, fields), so the
destination rule (421 when `:authority` names another host than the connection's) and injection
(`Plan.apply`, which overwrites any client value of the field) are written once. Framing and HPACK
are python-hyper `h2` (sans-IO); this module is imported only when a connection negotiates h2.

Each stream is relayed to a leg (proxy/h2_upstream.py): a stream on an HTTP/2 connection to the
upstream (when its ALPN offers h2, or plaintext with prior knowledge), or an HTTP/1.1 exchange on a
pooled connection (translation, when the upstream's ALPN picks http/1.1). Flow control holds both
ways: data from one side is acknowledged (WINDOW_UPDATE) only once the other side took it and its
transport is not paused, so a slow reader slows its writer and memory stays bounded by the windows.
A stream that cannot get its credential fails alone: gRPC gets `grpc-status` 14 (UNAVAILABLE),
others the JSON error; the connection's other streams continue.
"""

from __future__ import annotations

import asyncio
import json
import logging
from urllib.parse import quote

import h2.errors
import h2.events
import h2.exceptions

from proxy.credentials import Credential
from proxy.errors import BadRequest, MisdirectedRequest, ProxyError
from proxy.exchange import UNGOVERNED, Origin, Plan
from proxy.h2_upstream import H1Leg, H2Session, Leg, new_h2
from proxy.http_messages import Request
from proxy.pool import Destination
from proxy.timers import Watchdog
from proxy.upstream import UpstreamConnection

__all__ = ["PREFACE", "H2Connection", "Stream"]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_GRPC_UNAVAILABLE, _GRPC_INTERNAL = "14", "13"
log = logging.getLogger("sesame.proxy.h2")


class Stream:
    """One app stream and its relay: bytes pending each way, acknowledgements owed to each side."""

    __slots__ = ("app_done", "back", "back_end", "back_trailers", "cred", "grpc", "id", "leg", "no_body",
                 "out", "out_end", "out_trailers", "owed_app", "owed_up", "plan", "req", "responded", "up_id")

    def __init__(self, stream_id: int, req: Request, grpc: bool, no_body: bool) -> None:
        self.id, self.req, self.grpc, self.no_body = stream_id, req, grpc, no_body
        self.app_done = no_body  # the app ended its side of the stream
        self.plan: Plan | None = None
        self.cred: Credential | None = None
        self.leg: Leg | None = None
        self.up_id = 0
        self.out = bytearray()  # app → upstream, not yet taken by the leg
        self.out_end = False  # the app ended its side
        self.out_trailers: list[tuple[bytes, bytes]] | None = None
        self.owed_app = 0  # bytes the leg took but the app was not yet given credit for
        self.back = bytearray()  # upstream → app, waiting for the app's window
        self.back_end = False  # the upstream ended its side
        self.back_trailers: list[tuple[bytes, bytes]] | None = None
        self.owed_up = 0  # bytes the app's transport took while paused: credit the upstream later
        self.responded = False


class H2Connection(asyncio.Protocol):
    """One app connection speaking HTTP/2 (server side); streams relayed to upstream legs."""

    def __init__(self, engine, origin: Origin) -> None:  # engine: proxy.engine.Engine
        self.e, self.origin = engine, origin
        self.transport: asyncio.Transport | None = None
        self.conn = new_h2(client_side=False)
        self.streams: dict[int, Stream] = {}
        self.sessions: dict[tuple, H2Session] = {}  # upstream h2 connections, by destination
        self._dials: dict[tuple, asyncio.Future] = {}
        self._h1: set[tuple] = set()  # destinations whose ALPN picked http/1.1: translate
        self.paused = False  # the app's transport is paused (it reads slowly)
        self.closing = False
        self._watchdog: Watchdog | None = None

    # app side (asyncio.Protocol)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self.e.track(self, True):
            transport.abort()  # type: ignore[attr-defined]
            return
        self._watchdog = Watchdog(asyncio.get_running_loop(), self._expired)
        self._watchdog.arm(self.e.timeouts.header)  # the preface and SETTINGS
        self.flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.info("h2 protocol error from the app", extra={"reason": str(exc)[:200]})
            self.flush()
            self._close()
            return
        for event in events:
            self._event(event)
        self.flush()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        for st in list(self.streams.values()):
            if st.leg is not None:
                st.leg.cancel(st)
        self.streams.clear()
        for session in list(self.sessions.values()):
            session.close()
        self.sessions.clear()
        for fut in self._dials.values():
            fut.cancel()
        self.e.track(self, False)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        for st in list(self.streams.values()):
            self.credit_upstream(st)
            self.pump_back(st)
        self.flush()

    def shutdown(self) -> None:
        """Listener closing: GOAWAY now; close once the open streams are done."""
        self.closing = True
        self.conn.close_connection()
        self.flush()
        if not self.streams:
            self._close()

    def evictable(self) -> bool:
        return not self.streams

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _expired(self) -> None:
        if not self.streams:
            self.conn.close_connection()
            self.flush()
            self._close()

    def _idle_check(self) -> None:
        if not self.streams:
            if self.closing:
                self._close()
            elif self._watchdog is not None:
                self._watchdog.arm(self.e.timeouts.idle)

    # app events

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._request(event.stream_id, event.headers, event.stream_ended is not None)
        elif isinstance(event, h2.events.DataReceived):
            self._data(event)
        elif isinstance(event, h2.events.StreamEnded):
            st = self.streams.get(event.stream_id)
            if st is not None:
                st.out_end = st.app_done = True
                self.pump_out(st)
        elif isinstance(event, h2.events.TrailersReceived):
            st = self.streams.get(event.stream_id)
            if st is not None:
                st.out_trailers = event.headers
        elif isinstance(event, h2.events.StreamReset):
            st = self.streams.pop(event.stream_id, None)
            if st is not None and st.leg is not None:
                st.leg.reset(st, event.error_code)
            self._idle_check()
        elif isinstance(event, h2.events.WindowUpdated):
            targets = self.streams.values() if event.stream_id == 0 else [self.streams.get(event.stream_id)]
            for st in list(targets):
                if st is not None:
                    self.pump_back(st)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            for st in list(self.streams.values()):
                self.pump_back(st)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.closing = True
            self._idle_check()

    def _request(self, stream_id: int, headers: list[tuple[bytes, bytes]], no_body: bool) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        pseudo: dict[bytes, str] = {}
        fields: list[tuple[str, str]] = []
        grpc = False
        for name, value in headers:
            if name[:1] == b":":
                pseudo[name] = value.decode("latin-1")
            else:
                text = value.decode("latin-1")
                if name == b"content-type" and text.startswith("application/grpc"):
                    grpc = True
                fields.append((name.decode("latin-1"), text))
        method, target = pseudo.get(b":method", ""), pseudo.get(b":path", "")
        req = Request(method, target, "HTTP/2", fields)
        req.host = pseudo.get(b":authority") or next((v for n, v in fields if n == "host"), "")
        st = Stream(stream_id, req, grpc, no_body)
        self.streams[stream_id] = st
        try:
            if method == "CONNECT":
                raise BadRequest("CONNECT over HTTP/2 is not supported by the proxy")
            if not req.host:
                raise BadRequest("an HTTP/2 request needs :authority")
            if not target.startswith("/") and target != "*":
                raise BadRequest("an HTTP/2 request needs an origin-form :path")
            if self.origin is None:  # h2c to the explicit proxy: as an absolute-form request
                if pseudo.get(b":scheme") != "http":
                    raise BadRequest("an explicit proxy takes h2c for http:// only; use CONNECT for https")
                req.target = f"http://{req.host}{target}"
            plan = self.e.exchanges.plan(req, self.origin)
        except ProxyError as exc:
            self.refuse(st, exc, UNGOVERNED)
            return
        st.plan = plan
        self.e.observe(plan.host, plan.port, plan.route is not None)
        if plan.route is None:
            self._connect(st)
            return
        cred = self.e.credentials.peek(plan.route.audience)
        if cred is None:
            self.e.spawn(self._fetch_credential(st))
            return
        self._ready(st, cred)

    async def _fetch_credential(self, st: Stream) -> None:
        plan = st.plan
        assert plan is not None and plan.route is not None
        try:
            cred = await self.e.credentials.get(plan.route.audience)
        except ProxyError as exc:
            if self.streams.get(st.id) is st:
                self.refuse(st, exc, plan.target)
                self.flush()
            return
        if self.streams.get(st.id) is st:
            self._ready(st, cred)
            self.flush()

    def _ready(self, st: Stream, cred: Credential) -> None:
        """Write the credential (the one place: Plan.apply) and send the stream on its way."""
        plan = st.plan
        assert plan is not None
        try:  # SigV4: a stream without a body is signed over b""; a streamed body goes unsigned (S3)
            plan.apply(st.req, cred.token, b"" if st.no_body else None)
        except ProxyError as exc:
            self.refuse(st, exc, plan.target)
            return
        st.cred = cred
        self._connect(st)

    def _data(self, event: h2.events.DataReceived) -> None:
        st = self.streams.get(event.stream_id)
        padding = event.flow_controlled_length - len(event.data)
        if st is None:  # refused or reset: credit it back at once
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            return
        if padding:
            self.conn.acknowledge_received_data(padding, event.stream_id)
        st.out += event.data
        self.pump_out(st)

    # upstream legs

    def reconnect(self, st: Stream) -> None:
        """A stream that waited on a connection the upstream went away from: start it anew."""
        self._connect(st)

    def _connect(self, st: Stream) -> None:
        plan = st.plan
        assert plan is not None
        dest = self._h2_destination(plan)
        key = dest.key
        session = self.sessions.get(key)
        if session is not None and session.usable():
            session.open(st)
            return
        if key in self._h1:
            self.e.spawn(self._h1_leg(st, plan.dest))
            return
        self.e.spawn(self._via_dial(st, dest))

    def _h2_destination(self, plan: Plan) -> Destination:
        """The plan's destination, offering h2 in ALPN when TLS (same pool key, same verification)."""
        if plan.route is not None and plan.dest.ssl is not None:
            return self.e.exchanges.steps(plan.route).dest_h2
        return plan.dest

    async def _via_dial(self, st: Stream, dest: Destination) -> None:
        key = dest.key
        fut = self._dials.get(key)
        if fut is None:
            fut = self._dials[key] = asyncio.ensure_future(self._dial(dest))
            fut.add_done_callback(lambda _f: self._dials.pop(key, None))
        try:
            result = await asyncio.shield(fut)
        except ProxyError as exc:
            if self.streams.get(st.id) is st:
                self.refuse(st, exc, st.plan.target if st.plan else UNGOVERNED)
                self.flush()
            return
        except asyncio.CancelledError:
            return
        if self.streams.get(st.id) is not st:
            return
        if isinstance(result, H2Session):
            result.open(st)
        else:
            await self._h1_leg(st, st.plan.dest)  # type: ignore[union-attr]
        self.flush()

    async def _dial(self, dest: Destination) -> H2Session | None:
        """Open a connection to `dest`: an H2Session when it speaks h2, else None (http/1.1: the
        connection goes to the pool for the HTTP/1.1 legs)."""
        dialled = await self.e.pool.connect(dest, H2Session.factory(self))
        session: H2Session = dialled  # type: ignore[assignment]
        if session.alpn_h2 or dest.ssl is None:
            session.start()
            self.sessions[dest.key] = session
            return session
        self._h1.add(dest.key)
        up = session.as_http1()
        if up is not None:
            self.e.pool.give(up)
        return None

    async def _h1_leg(self, st: Stream, dest: Destination) -> None:
        up = self.e.pool.take(dest.key)
        if up is None:
            try:
                up = await self.e.pool.connect(dest, UpstreamConnection)
            except ProxyError as exc:
                if self.streams.get(st.id) is st:
                    self.refuse(st, exc, st.plan.target if st.plan else UNGOVERNED)
                    self.flush()
                return
        if self.streams.get(st.id) is not st:
            self.e.pool.give(up)
            return
        H1Leg(self, up).open(st)  # type: ignore[arg-type]
        self.flush()

    # relaying (called by the legs too)

    def pump_out(self, st: Stream) -> None:
        """App → upstream: hand the leg what its window takes; credit the app for it."""
        leg = st.leg
        if leg is None or not leg.ready(st):
            return
        while st.out:
            room = leg.room(st)
            if room <= 0:
                break
            chunk = bytes(st.out[:room])
            del st.out[:room]
            leg.send(st, chunk)
            st.owed_app += len(chunk)
        self.credit_app(st)
        if not st.out and st.out_end:
            st.out_end = False  # sent once
            leg.end(st, st.out_trailers)
            st.out_trailers = None

    def credit_app(self, st: Stream) -> None:
        leg = st.leg
        if st.owed_app and leg is not None and not leg.paused(st):
            n, st.owed_app = st.owed_app, 0
            try:
                self.conn.acknowledge_received_data(n, st.id)
            except h2.exceptions.ProtocolError:
                pass

    def credit_upstream(self, st: Stream) -> None:
        if st.owed_up and not self.paused and st.leg is not None:
            n, st.owed_up = st.owed_up, 0
            st.leg.credit(st, n)

    def respond(self, st: Stream, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        """Response (or informational) HEADERS from the upstream."""
        if self.streams.get(st.id) is not st:
            return
        if not headers[0][1].startswith(b"1"):
            st.responded = True
        try:
            self.conn.send_headers(st.id, headers, end_stream=end)
        except h2.exceptions.ProtocolError:
            self.abandon(st, h2.errors.ErrorCodes.INTERNAL_ERROR)
            return
        if end:
            self._done(st, "forwarded")

    def relay_back(self, st: Stream, data: bytes) -> None:
        st.back += data
        self.pump_back(st)

    def end_back(self, st: Stream, trailers: list[tuple[bytes, bytes]] | None) -> None:
        st.back_end, st.back_trailers = True, trailers
        self.pump_back(st)

    def pump_back(self, st: Stream) -> None:
        """Upstream → app: send what the app's window takes; credit the upstream for it."""
        if self.streams.get(st.id) is not st:
            return
        conn = self.conn
        sent = 0
        try:
            while st.back and not self.paused:  # a paused transport: the bytes wait here, uncredited
                room = min(conn.local_flow_control_window(st.id), conn.max_outbound_frame_size, len(st.back))
                if room <= 0:
                    break
                conn.send_data(st.id, bytes(st.back[:room]))
                del st.back[:room]
                sent += room
            if not st.back and st.back_end:
                if st.back_trailers:
                    conn.send_headers(st.id, st.back_trailers, end_stream=True)
                else:
                    conn.end_stream(st.id)
                st.back_end = False
                st.owed_up += sent
                self.credit_upstream(st)
                self._done(st, "forwarded")
                return
        except h2.exceptions.ProtocolError:
            self.abandon(st, h2.errors.ErrorCodes.INTERNAL_ERROR)
            return
        st.owed_up += sent
        self.credit_upstream(st)
        if st.leg is not None:
            st.leg.backlog(st, len(st.back))

    def abandon(self, st: Stream, code: int) -> None:
        """Reset the app's stream (the upstream reset or lost it mid-response)."""
        if self.streams.pop(st.id, None) is None:
            return
        try:
            self.conn.reset_stream(st.id, code)
        except h2.exceptions.ProtocolError:
            pass
        self.e.metrics.request(st.plan.target if st.plan else UNGOVERNED, "response_interrupted")
        self._idle_check()

    def refused_upstream(self, st: Stream, exc: ProxyError) -> None:
        """The leg failed before a response head: the stream's error reply (or a reset after one)."""
        if st.responded:
            self.abandon(st, h2.errors.ErrorCodes.INTERNAL_ERROR)
        else:
            self.refuse(st, exc, st.plan.target if st.plan else UNGOVERNED)

    def refuse(self, st: Stream, exc: ProxyError, target: str) -> None:
        """Fail one stream closed: gRPC status 14 (13 for a malformed or misdirected request), or the
        JSON error; the connection and its other streams go on."""
        if self.streams.pop(st.id, None) is None:
            return
        if st.leg is not None:
            st.leg.cancel(st)
        self.e.metrics.request(target, exc.code)
        log.info("request failed", extra={"target": target, "error": exc.code, "reason": exc.message})
        try:
            if st.grpc:
                malformed = isinstance(exc, BadRequest | MisdirectedRequest)
                status = _GRPC_INTERNAL if malformed else _GRPC_UNAVAILABLE
                message = quote(f"sesame proxy: {exc.code}: {exc.message}", safe=" :/,()'")
                self.conn.send_headers(st.id, [
                    (b":status", b"200"), (b"content-type", b"application/grpc"),
                    (b"grpc-status", status.encode()), (b"grpc-message", message.encode("ascii")),
                ], end_stream=True)
            else:
                body = json.dumps(exc.body()).encode()
                self.conn.send_headers(st.id, [
                    (b":status", str(exc.status).encode()), (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ])
                self.conn.send_data(st.id, body, end_stream=True)  # ≤ the initial window of 64 KiB
        except h2.exceptions.ProtocolError:
            pass
        # the app may still be sending its body: credit what was buffered so it can finish
        if st.out:
            self.conn.acknowledge_received_data(len(st.out), st.id)
            st.out.clear()
        self._idle_check()

    def _done(self, st: Stream, outcome: str) -> None:
        """The response is complete: forget the stream (telling the app to stop sending, if it was)."""
        if self.streams.pop(st.id, None) is None:
            return
        if st.leg is not None:
            st.leg.finished(st)
        if not st.app_done:  # RFC 9113 §8.1: a complete response ends the request too
            try:
                self.conn.reset_stream(st.id, h2.errors.ErrorCodes.NO_ERROR)
            except h2.exceptions.ProtocolError:
                pass
        self.e.metrics.request(st.plan.target if st.plan else UNGOVERNED, outcome)
        self._idle_check()

    def drop_credential(self, st: Stream) -> None:
        """An upstream 401: the next streams fetch a fresh credential (this one is not replayed)."""
        plan, cred = st.plan, st.cred
        if plan is not None and plan.route is not None and cred is not None:
            self.e.credentials.drop(plan.route.audience, cred.token)

    def session_closed(self, session: H2Session) -> None:
        for key, known in list(self.sessions.items()):
            if known is session:
                del self.sessions[key]
        self.flush()
