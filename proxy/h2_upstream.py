"""Upstream legs of HTTP/2 streams: a stream on an HTTP/2 connection, or an HTTP/1.1 exchange.

`H2Session` is one HTTP/2 connection to an upstream, opened for one app connection and shared by its
streams (at most the upstream's SETTINGS_MAX_CONCURRENT_STREAMS at a time; the rest wait in order).
`H1Leg` translates one stream into an HTTP/1.1 exchange on a pooled `UpstreamConnection` when the
upstream's ALPN picked http/1.1. Both report to the app connection (proxy/h2_engine.py), which owns
flow control and error replies; neither knows about routes or credentials.
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING, Protocol

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from proxy.errors import ProxyError, UpstreamProtocolError, UpstreamUnreachable
from proxy.http_framing import BodyFramer, framer
from proxy.http_messages import HOP_BY_HOP, Body, Response, serialize_head
from proxy.pool import PooledProtocol
from proxy.upstream import UpstreamConnection

if TYPE_CHECKING:
    from proxy.h2_engine import H2Connection, Stream

__all__ = ["CONNECTION_WINDOW", "MAX_STREAMS", "WINDOW", "H1Leg", "H2Session", "Leg", "new_h2"]

MAX_STREAMS = 256  # concurrent streams offered to the app per connection
WINDOW = 256 * 1024  # per-stream receive window offered to each side
CONNECTION_WINDOW = 1024 * 1024  # per-connection receive window: bounds the bytes buffered per direction
_NOT_FORWARDED = HOP_BY_HOP | {"host", "transfer-encoding", "content-length"}
_NOT_FORWARDED_H2 = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade",
                               "host"})


# h2 4.x closes its whole connection state machine when a GOAWAY arrives, so the streams the peer
# still finishes (those at or below its last_stream_id, RFC 9113 §6.8) and its PINGs raise
# ProtocolError. Sesame opens no new stream on a connection after its GOAWAY (H2Session.goaway;
# an app that sent GOAWAY opens none either), so such a connection simply stays open until its
# streams are done.
_State, _Input = h2.connection.ConnectionState, h2.connection.ConnectionInputs
_TRANSITIONS_AFTER_GOAWAY = {
    **h2.connection.H2ConnectionStateMachine._transitions,
    (_State.CLIENT_OPEN, _Input.RECV_GOAWAY): (None, _State.CLIENT_OPEN),
    (_State.SERVER_OPEN, _Input.RECV_GOAWAY): (None, _State.SERVER_OPEN),
}


_HEADROOM_BELOW = 100  # limits at or below this keep one stream in reserve (see H2Session._has_room)


def new_h2(*, client_side: bool) -> h2.connection.H2Connection:
    """An h2 connection with Sesame's settings; its preface is queued in data_to_send()."""
    # Inbound headers are validated on both connections; outbound ones are those inbound headers
    # (connection-specific fields dropped, names lower-cased) plus the credential, which was checked
    # for control characters: validating them again costs ~20 % of a request's CPU.
    config = h2.config.H2Configuration(client_side=client_side, header_encoding=None,
                                       validate_outbound_headers=False, normalize_outbound_headers=False)
    conn = h2.connection.H2Connection(config)
    conn.state_machine._transitions = _TRANSITIONS_AFTER_GOAWAY  # see above
    conn.local_settings = h2.settings.Settings(
        client=client_side,
        initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WINDOW,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 64 * 1024,
        },
    )
    conn.initiate_connection()
    conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)
    return conn


class Leg(Protocol):
    """Where one app stream goes upstream (the methods the app connection calls)."""

    def open(self, st: Stream) -> None: ...
    def ready(self, st: Stream) -> bool: ...  # the request head went out
    def room(self, st: Stream) -> int: ...  # bytes the upstream takes now
    def send(self, st: Stream, data: bytes) -> None: ...
    def end(self, st: Stream, trailers: list[tuple[bytes, bytes]] | None) -> None: ...
    def paused(self, st: Stream) -> bool: ...  # the upstream's transport is paused
    def credit(self, st: Stream, n: int) -> None: ...  # the app took n bytes of the response
    def backlog(self, st: Stream, n: int) -> None: ...  # response bytes waiting for the app's window
    def reset(self, st: Stream, code: int) -> None: ...
    def cancel(self, st: Stream) -> None: ...
    def finished(self, st: Stream) -> None: ...


class H2Session(PooledProtocol):
    """One HTTP/2 connection to an upstream, owned by one app connection."""

    def __init__(self, owner: H2Connection) -> None:
        self.owner = owner
        self.conn: h2.connection.H2Connection | None = None
        self.alpn_h2 = False
        self._early = bytearray()  # bytes that arrived before start()
        self.streams: dict[int, Stream] = {}
        self._waiting: collections.deque[Stream] = collections.deque()
        self._trailers: dict[int, list[tuple[bytes, bytes]]] = {}
        self._write_paused = False
        self._flush_due = False
        self._settled = False  # the upstream's SETTINGS arrived (its stream limit is known)
        self.goaway = False

    @classmethod
    def factory(cls, owner: H2Connection):
        return lambda: cls(owner)

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        self.alpn_h2 = ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2"

    def start(self) -> None:
        self.conn = new_h2(client_side=True)
        self.flush()
        if self._early:
            early, self._early = bytes(self._early), bytearray()
            self.data_received(early)

    def as_http1(self) -> UpstreamConnection | None:
        """The upstream picked http/1.1: the same connection as an UpstreamConnection, for the pool."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return None
        up = UpstreamConnection()
        up.key = self.key
        transport.set_protocol(up)
        up.connection_made(transport)
        return up

    def usable(self) -> bool:
        return super().usable() and not self.goaway and self.conn is not None

    def flush(self) -> None:
        """Write what h2 queued, once per event-loop iteration however many streams queued frames."""
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        if self.conn is None or self.transport is None:
            return
        data = self.conn.data_to_send()
        if data and not self.transport.is_closing():
            self.transport.write(data)

    # the leg, for the app connection

    def open(self, st: Stream) -> None:
        conn = self.conn
        assert conn is not None
        st.leg = self
        if not self._settled or not self._has_room(conn) or self._waiting:
            self._waiting.append(st)
            return
        self._start(st)

    def _start(self, st: Stream) -> None:
        conn = self.conn
        assert conn is not None
        req = st.req
        try:
            headers = [
                (b":method", req.method.encode("latin-1")),
                (b":scheme", b"https" if self.alpn_h2 else b"http"),
                (b":authority", req.host.encode("latin-1")),
                (b":path", req.target.encode("latin-1")),
            ]
            for name, value in req.headers:
                lname = name.lower()
                if lname not in _NOT_FORWARDED_H2 and (lname != "te" or value.lower() == "trailers"):
                    headers.append((lname.encode("latin-1"), value.encode("latin-1")))
            st.up_id = conn.get_next_available_stream_id()
            conn.send_headers(st.up_id, headers, end_stream=st.no_body)
        except (UnicodeEncodeError, h2.exceptions.ProtocolError) as exc:
            error = UpstreamProtocolError(f"the request cannot be sent over HTTP/2 ({exc})")
            self.owner.refused_upstream(st, error)
            return
        self.streams[st.up_id] = st
        self.flush()
        self.owner.pump_out(st)

    def ready(self, st: Stream) -> bool:
        return bool(st.up_id)

    def room(self, st: Stream) -> int:
        if not st.up_id or self.conn is None or self._write_paused:
            return 0
        try:
            return self.conn.local_flow_control_window(st.up_id)
        except h2.exceptions.ProtocolError:
            return 0

    def send(self, st: Stream, data: bytes) -> None:
        conn = self.conn
        assert conn is not None
        size = conn.max_outbound_frame_size
        for i in range(0, len(data), size):
            conn.send_data(st.up_id, data[i : i + size])
        self.flush()

    def end(self, st: Stream, trailers: list[tuple[bytes, bytes]] | None) -> None:
        if st.no_body or not st.up_id or self.conn is None:
            return
        try:
            if trailers:
                self.conn.send_headers(st.up_id, trailers, end_stream=True)
            else:
                self.conn.end_stream(st.up_id)
        except h2.exceptions.ProtocolError:
            pass
        self.flush()

    def paused(self, st: Stream) -> bool:
        return self._write_paused

    def credit(self, st: Stream, n: int) -> None:
        if self.conn is not None and st.up_id:
            try:
                self.conn.acknowledge_received_data(n, st.up_id)
            except h2.exceptions.ProtocolError:
                pass
            self.flush()

    def backlog(self, st: Stream, n: int) -> None:
        pass  # flow control: the upstream stops at its window until credited

    def reset(self, st: Stream, code: int) -> None:
        self._forget(st, code)

    def cancel(self, st: Stream) -> None:
        self._forget(st, h2.errors.ErrorCodes.CANCEL)

    def finished(self, st: Stream) -> None:
        self._forget(st, h2.errors.ErrorCodes.NO_ERROR)

    def _forget(self, st: Stream, code: int) -> None:
        if st in self._waiting:
            self._waiting.remove(st)
            return
        if self.streams.pop(st.up_id, None) is None or self.conn is None:
            return
        self._trailers.pop(st.up_id, None)
        stream = self.conn.streams.get(st.up_id)
        if stream is not None and not stream.closed:
            try:
                self.conn.reset_stream(st.up_id, code)
            except h2.exceptions.ProtocolError:
                pass
        self._start_waiting()
        self.flush()

    def _start_waiting(self) -> None:
        conn = self.conn
        while self._waiting and conn is not None and self._settled and self._has_room(conn):
            self._start(self._waiting.popleft())

    @staticmethod
    def _has_room(conn: h2.connection.H2Connection) -> bool:
        # One slot of headroom under a small limit: a server frees a finished stream's slot a moment
        # after its last frame (gRPC's does), and a stream opened in that moment is refused.
        limit = conn.remote_settings.max_concurrent_streams
        return conn.open_outbound_streams < (limit - 1 if 1 < limit <= _HEADROOM_BELOW else limit)

    # upstream events (asyncio.Protocol)

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn is None:
            self._early += data
            return
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.flush()
            self._fail_all(UpstreamProtocolError(f"the upstream broke HTTP/2 ({exc})"))
            self.close()
            return
        owner = self.owner
        for event in events:
            st = self.streams.get(getattr(event, "stream_id", 0) or 0)
            if isinstance(event, h2.events.ResponseReceived | h2.events.InformationalResponseReceived):
                if st is not None:
                    if event.headers and event.headers[0] == (b":status", b"401"):
                        owner.drop_credential(st)
                    owner.respond(st, [h for h in event.headers if h[0] not in _DROPPED], False)
            elif isinstance(event, h2.events.DataReceived):
                padding = event.flow_controlled_length - len(event.data)
                if st is None or padding:
                    conn.acknowledge_received_data(event.flow_controlled_length if st is None else padding,
                                                   event.stream_id)
                if st is not None and event.data:
                    owner.relay_back(st, event.data)
            elif isinstance(event, h2.events.TrailersReceived):
                if st is not None:
                    self._trailers[event.stream_id] = event.headers
            elif isinstance(event, h2.events.StreamEnded):
                if st is not None:
                    owner.end_back(st, self._trailers.pop(event.stream_id, None))
            elif isinstance(event, h2.events.StreamReset):
                if st is not None:
                    self.streams.pop(event.stream_id, None)
                    if st.responded:
                        owner.abandon(st, event.error_code)
                    else:
                        owner.refused_upstream(st, UpstreamUnreachable(
                            f"the upstream reset the stream (error code {event.error_code})"
                        ))
                    self._start_waiting()
            elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
                if isinstance(event, h2.events.RemoteSettingsChanged):
                    self._settled = True
                for known in list(self.streams.values()):
                    owner.pump_out(known)
                self._start_waiting()
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._goaway(event.last_stream_id)
        self.flush()
        owner.flush()

    def _goaway(self, last_stream_id: int | None) -> None:
        """GOAWAY: streams above `last_stream_id` were not processed (the app may retry them); new
        and waiting streams go to a new connection; the others finish here."""
        self.goaway = True
        self.owner.session_closed(self)
        last = last_stream_id if last_stream_id is not None else 2**31
        for up_id, st in list(self.streams.items()):
            if up_id > last:
                del self.streams[up_id]
                self.owner.abandon(st, h2.errors.ErrorCodes.REFUSED_STREAM)
        waiting, self._waiting = list(self._waiting), collections.deque()
        for st in waiting:
            st.leg = None
            self.owner.reconnect(st)
        if not self.streams:
            self.close()

    def _fail_all(self, exc: ProxyError) -> None:
        streams = list(self.streams.values()) + list(self._waiting)
        self.streams.clear()
        self._waiting.clear()
        for st in streams:
            self.owner.refused_upstream(st, exc)
        self.owner.flush()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        for st in list(self.streams.values()):
            self.owner.pump_out(st)
        self.owner.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.owner.session_closed(self)
        self._fail_all(UpstreamUnreachable("the upstream closed the HTTP/2 connection"))

    def close(self) -> None:
        if self.conn is not None and self.transport is not None and not self.transport.is_closing():
            try:
                self.conn.close_connection()
            except h2.exceptions.ProtocolError:
                pass
            self._flush()
            self.transport.close()
            return
        super().close()


_DROPPED = frozenset(name.encode() for name in _NOT_FORWARDED_H2)


class H1Leg:
    """One app stream as an HTTP/1.1 exchange on a pooled connection (the upstream lacks h2)."""

    def __init__(self, owner: H2Connection, up: UpstreamConnection) -> None:
        self.owner, self.up = owner, up
        self.st: Stream | None = None
        self._chunked = False
        self._whole = False  # the request went out complete
        self._decoder: BodyFramer | None = None
        self._up_paused = False
        self._reading = True

    def open(self, st: Stream) -> None:
        self.st, st.leg = st, self
        req = st.req
        fields = [(n, v) for n, v in req.headers if n.lower() not in _NOT_FORWARDED]
        length = next((v for n, v in req.headers if n.lower() == "content-length"), None)
        extra = ""
        if st.no_body:
            self._whole = True
        elif length is not None:
            extra = f"Content-Length: {length}\r\n"
        else:
            self._chunked, extra = True, "Transfer-Encoding: chunked\r\n"
        try:
            head = serialize_head(f"{req.method} {req.target} HTTP/1.1", [("Host", req.host), *fields], extra)
        except UnicodeEncodeError as exc:
            self.up.close()
            self.owner.refused_upstream(st, UpstreamProtocolError(f"the request cannot be sent ({exc})"))
            return
        self.up.start(self, req.method, head)
        self.owner.pump_out(st)

    def ready(self, st: Stream) -> bool:
        return self.st is st

    def room(self, st: Stream) -> int:
        return 0 if self._up_paused else 1 << 20

    def send(self, st: Stream, data: bytes) -> None:
        transport = self.up.transport
        assert transport is not None
        if self._chunked:
            transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            transport.write(data)

    def end(self, st: Stream, trailers: list[tuple[bytes, bytes]] | None) -> None:
        if self._whole:
            return
        self._whole = True
        if self._chunked and self.up.transport is not None:
            self.up.transport.write(b"0\r\n\r\n")  # the app's trailers have no HTTP/1.1 meaning here

    def paused(self, st: Stream) -> bool:
        return self._up_paused

    def credit(self, st: Stream, n: int) -> None:
        self.backlog(st, len(st.back))

    def backlog(self, st: Stream, n: int) -> None:
        """No HTTP/2 window upstream: stop reading it while the app is behind."""
        reading = n == 0 and not self.owner.paused
        transport = self.up.transport
        if reading != self._reading and transport is not None and not transport.is_closing():
            self._reading = reading
            if reading:
                transport.resume_reading()
            else:
                transport.pause_reading()

    def reset(self, st: Stream, code: int) -> None:
        self.cancel(st)

    def cancel(self, st: Stream) -> None:
        self.st = None
        self.up.detach()
        self.up.close()

    def finished(self, st: Stream) -> None:
        self.st = None
        up = self.up
        up.detach()
        if up.keep and self._whole:
            self.owner.e.pool.give(up)
        else:
            up.close()

    # proxy/upstream.ResponseSink

    def response_head(self, resp: Response) -> bool:
        st = self.st
        if st is None:
            return False
        if resp.status < 200:
            return True  # interim responses are not relayed over HTTP/2
        if resp.status == 401:
            self.owner.drop_credential(st)
        headers = [(b":status", str(resp.status).encode())]
        headers += [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in resp.headers
                    if n.lower() not in _NOT_FORWARDED or n.lower() == "content-length"]
        if resp.body == Body.CHUNKED:
            self._decoder = framer(Body.CHUNKED, 0, UpstreamProtocolError, collect=True)
        self.owner.respond(st, headers, False)
        return True

    def response_body(self, data: bytes, done: bool) -> None:
        st = self.st
        if st is None:
            return
        decoder = self._decoder
        if decoder is not None and data:
            decoder.feed(data)
            assert decoder.payload is not None
            data = bytes(decoder.payload)
            decoder.payload.clear()
        if data:
            self.owner.relay_back(st, data)
        if done:
            self.owner.end_back(st, None)
        self.owner.flush()

    def upstream_failed(self, exc: ProxyError) -> None:
        self._lost(exc)

    def upstream_lost(self, *, replayable: bool) -> None:
        self._lost(UpstreamUnreachable("the upstream closed the connection without a complete response"))

    def _lost(self, exc: ProxyError) -> None:
        st, self.st = self.st, None
        if st is not None:
            self.up.close()
            self.owner.refused_upstream(st, exc)
            self.owner.flush()

    def upstream_paused(self, paused: bool) -> None:
        self._up_paused = paused
        st = self.st
        if st is not None:
            if not paused:
                self.owner.pump_out(st)
            else:
                self.owner.credit_app(st)
            self.owner.flush()
