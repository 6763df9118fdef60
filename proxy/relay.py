"""Byte tunnels between two transports: CONNECT to ungoverned hosts, unclassified transparent
connections, and WebSocket after its upgrade. Nothing is parsed, decrypted or injected."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["Relay"]


class _Half(asyncio.Protocol):
    """One side of a relay: what it receives is written to the other side, with back-pressure."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.transport: asyncio.Transport | None = None
        self.peer: _Half | None = None
        self.eof = False
        self.early = b""  # bytes that arrived before the peer was attached (a server that speaks first)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = self.peer
        if peer is not None and peer.early:  # the other side spoke first: deliver, then read on
            early, peer.early = peer.early, b""
            transport.write(early)  # type: ignore[attr-defined]
            if peer.transport is not None and not peer.transport.is_closing():
                peer.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.transport.is_closing():
            peer.transport.write(data)
        elif peer is not None and peer.transport is None and not self.relay.closed:
            self.early += data  # e.g. an HTTP/2 server's SETTINGS: kept until the app side is attached
            if self.transport is not None:
                self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer is None or peer.transport is None or peer.transport.is_closing():
            return False
        if peer.eof or not peer.transport.can_write_eof():
            self.relay.close()
            return False
        try:
            peer.transport.write_eof()
        except (OSError, RuntimeError):  # the peer went away meanwhile
            self.relay.close()
            return False
        return True  # half-closed: the other direction keeps flowing

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.relay.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None and not self.peer.transport.is_closing():
            self.peer.transport.resume_reading()


class Relay:
    """Two halves; `client` wraps an existing transport, `upstream` is the factory for a new one."""

    def __init__(self, on_close: Callable[[], None] | None = None) -> None:
        self.client, self.upstream = _Half(self), _Half(self)
        self.client.peer, self.upstream.peer = self.upstream, self.client
        self._on_close = on_close
        self.closed = False

    def attach_client(self, transport: asyncio.Transport, buffered: bytes = b"") -> None:
        """Take over an open client transport; `buffered`: bytes already read from it, sent first."""
        transport.set_protocol(self.client)
        self.client.connection_made(transport)
        if buffered:
            self.client.data_received(buffered)
        if transport.is_closing():
            self.close()
        else:
            transport.resume_reading()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for half in (self.client, self.upstream):
            if half.transport is not None and not half.transport.is_closing():
                half.transport.close()  # flushes what was written, then closes
        if self._on_close is not None:
            self._on_close()
