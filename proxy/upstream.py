"""An upstream connection driven by callbacks: sends one request at a time and frames its response.

The exchange in flight (proxy/engine.py) is its `sink`: it gets the response head, the body bytes in
their own framing (validated by proxy/http_framing.py), and the connection's end. This module knows
HTTP/1.1 response framing and nothing about routes or credentials.
"""

from __future__ import annotations

from typing import Protocol

from proxy.errors import ProxyError, UpstreamProtocolError
from proxy.http_framing import BodyFramer, find_head, framer
from proxy.http_messages import Response, parse_response_head
from proxy.pool import PooledProtocol

__all__ = ["ResponseSink", "UpstreamConnection"]


class ResponseSink(Protocol):
    """What an UpstreamConnection reports to (the exchange in flight)."""

    def response_head(self, resp: Response) -> bool:
        """A response head arrived; False when the sink took the connection away (101, replay, error)."""

    def response_body(self, data: bytes, done: bool) -> None:
        """Body bytes in their framing; `done` with the last ones."""

    def upstream_failed(self, exc: ProxyError) -> None:
        """The upstream broke HTTP/1.1 framing."""

    def upstream_lost(self, *, replayable: bool) -> None:
        """The connection closed before the response was complete; `replayable`: not one byte came."""

    def upstream_paused(self, paused: bool) -> None:
        """The upstream reads our request body slower than the app sends it (flow control)."""


class UpstreamConnection(PooledProtocol):
    """A pooled upstream connection; while an exchange runs, its response goes to `sink`."""

    def __init__(self) -> None:
        self.sink: ResponseSink | None = None
        self.keep = True  # reusable once the current response is complete
        self._method = "GET"
        self._buf = bytearray()  # a response head split across reads
        self._body: BodyFramer | None = None
        self._seen = False  # a response byte arrived for the exchange in flight
        self.pending = b""  # bytes after a 101 head: the first bytes of the upgraded protocol

    def start(self, sink: ResponseSink, method: str, data: bytes) -> None:
        """Start an exchange: `data` is the request head and whatever body is already at hand."""
        self.sink, self._method = sink, method
        self._buf.clear()
        self._body, self._seen, self.keep = None, False, True
        self.transport.write(data)  # type: ignore[union-attr]

    def detach(self) -> None:
        """End the exchange (before pooling or closing): later bytes have no sink."""
        self.sink = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if sink is None:  # bytes nobody asked for: never reuse this connection
            self.close()
            return
        self._seen = True
        try:
            while data:
                if self._body is None:
                    data = self._head(sink, data)
                    if data is None:
                        return
                    if self._body is None:  # after an interim (1xx) head: the next head follows
                        continue
                body = self._body
                assert body is not None
                n = body.feed(data)
                if n < len(data):  # more than the framing says: the connection is not reusable
                    self.keep = False
                if n or body.done:
                    sink.response_body(data[:n] if n < len(data) else data, body.done)
                return
        except UpstreamProtocolError as exc:
            self.keep = False
            if self.sink is not None:
                self.sink.upstream_failed(exc)

    def _head(self, sink: ResponseSink, data: bytes) -> bytes | None:
        """Parse a head from the buffered bytes; the bytes after it, or None when waiting or handed off."""
        if self._buf:
            self._buf += data
            data = bytes(self._buf)
            self._buf.clear()
        end = find_head(data, UpstreamProtocolError)
        if end is None:
            self._buf += data
            return None
        resp = parse_response_head(data[:end], self._method)
        self.pending = data[end:] if resp.status == 101 else b""
        if not sink.response_head(resp):
            return None
        if self.sink is None:  # the sink let go of the connection in response_head
            return None
        if resp.status < 200:  # interim: the final head follows
            self._seen = False
            return data[end:] or None
        self.keep = resp.keep_alive
        self._body = framer(resp.body, resp.length, UpstreamProtocolError)
        rest = data[end:]
        if self._body.done:
            if rest:
                self.keep = False
            sink.response_body(b"", True)
            return None
        if not rest:
            sink.response_body(b"", False)  # the head alone: the body follows in later reads
            return None
        return rest

    def eof_received(self) -> bool:
        body, sink = self._body, self.sink
        if sink is not None and body is not None and not body.done:
            try:
                body.eof()
            except UpstreamProtocolError:
                return False  # connection_lost reports the interrupted body
            self.keep = False
            sink.response_body(b"", True)
        return False

    def pause_writing(self) -> None:
        if self.sink is not None:
            self.sink.upstream_paused(True)

    def resume_writing(self) -> None:
        if self.sink is not None:
            self.sink.upstream_paused(False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.upstream_lost(replayable=not self._seen)
