"""The fast path's upstream side: a pooled connection that sends one request at a time, parses the
response head and frames a Content-Length (or empty) body, reporting each step to its client.

The client connection (proxy/fastpath.py) decides what a response head means (relay it, replay after a
401, or move to the streams forwarder); this module only knows HTTP/1.1 response framing.
"""

from __future__ import annotations

from typing import Protocol

from proxy.errors import ProxyError, UpstreamProtocolError
from proxy.pool import PooledProtocol
from proxy.wire import MAX_HEAD, Body, Response, parse_response

__all__ = ["ResponseSink", "UpstreamConnection"]


class ResponseSink(Protocol):
    """What an UpstreamConnection reports to (the client connection of the exchange in flight)."""

    def response_head(self, resp: Response, raw: bytes, rest: bytes) -> bytes | None:
        """The final head to write before the body, or None: the sink took the connection over."""

    def response_body(self, data: bytes, done: bool) -> None:
        """Bytes for the app (the head first, then body bytes); `done` after the last one."""

    def upstream_failed(self, exc: ProxyError) -> None:
        """The upstream did not speak HTTP/1.1."""

    def upstream_lost(self, *, mid_body: bool, replayable: bool) -> None:
        """The connection closed; `replayable`: not one response byte had arrived."""


class UpstreamConnection(PooledProtocol):
    """A pooled upstream connection; while an exchange runs, its response goes to `client`."""

    def __init__(self) -> None:
        self.client: ResponseSink | None = None
        self.keep = True  # reusable once the current response is complete
        self._method = "GET"
        self._head = bytearray()  # a response head split across reads
        self._in_body = False
        self._remaining = 0

    def send(self, client: ResponseSink, method: str, data: bytes) -> None:
        """Start an exchange: `data` is the whole request (head and any buffered body)."""
        self.client, self._method = client, method
        self._head.clear()
        self._in_body, self._remaining, self.keep = False, 0, True
        self.transport.write(data)  # type: ignore[union-attr]

    def detach(self) -> None:
        """End the exchange (before pooling or closing): later bytes have no client."""
        self.client = None
        if self.transport is not None and self.transport.is_reading() is False:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:  # bytes nobody asked for: never reuse this connection
            self.close()
            return
        if self._in_body:
            self._body(client, data, b"")
            return
        if self._head:
            self._head += data
            data = bytes(self._head)
        end = data.find(b"\r\n\r\n")
        if end < 0:
            self._head[:] = data
            if len(data) > MAX_HEAD:
                client.upstream_failed(UpstreamProtocolError(f"response head larger than {MAX_HEAD} bytes"))
            return
        raw, rest = data[: end + 4], data[end + 4 :]
        try:
            resp = parse_response(raw, self._method)
        except UpstreamProtocolError as exc:
            client.upstream_failed(exc)
            return
        head = client.response_head(resp, raw, rest)
        if head is None:
            return
        self._in_body, self.keep = True, resp.keep_alive
        self._remaining = resp.length if resp.body == Body.LENGTH else 0
        self._body(client, rest, head)

    def _body(self, client: ResponseSink, data: bytes, head: bytes) -> None:
        if len(data) > self._remaining:  # more than the framing says: the connection is not reusable
            data, self.keep = data[: self._remaining], False
        self._remaining -= len(data)
        client.response_body(head + data if head else data, self._remaining == 0)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.client is not None:
            self.client.upstream_lost(mid_body=self._in_body, replayable=not self._head)
