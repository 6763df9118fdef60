"""Keep-alive connections to upstreams, pooled per (address, port, TLS server name)."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from proxy.errors import UpstreamTimeout, UpstreamTLSError, UpstreamUnreachable

__all__ = [
    "DEFAULT_MAX_IDLE_PER_UPSTREAM",
    "ConnectionPool",
    "Destination",
    "PooledProtocol",
    "Upstream",
    "UpstreamPool",
]

DEFAULT_MAX_IDLE_PER_UPSTREAM = 64
_STREAM_LIMIT = 64 * 1024


class _Poolable(Protocol):
    key: tuple
    idle_since: float

    def usable(self) -> bool: ...
    def close(self) -> None: ...


_Conn = TypeVar("_Conn", bound=_Poolable)


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a request goes: the address to dial, and the TLS name to verify when `ssl` is set."""

    host: str
    port: int
    ssl: ssl.SSLContext | None = field(default=None, compare=False)
    server_hostname: str | None = None
    key: tuple[str, int, str | None] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", (self.host, self.port, self.server_hostname if self.ssl else None))


@contextmanager
def _translated(dest: Destination) -> Iterator[None]:
    """Connect and handshake failures → the proxy's upstream errors (502/504)."""
    try:
        yield
    except ssl.SSLCertVerificationError as exc:
        raise UpstreamTLSError(
            f"{dest.server_hostname or dest.host}:{dest.port} presented a certificate that failed "
            f"verification ({exc.verify_message})"
        ) from exc
    except ssl.SSLError as exc:
        raise UpstreamTLSError(f"TLS handshake with {dest.host}:{dest.port} failed ({exc.reason})") from exc
    except TimeoutError as exc:
        raise UpstreamTimeout(f"connecting to {dest.host}:{dest.port} timed out") from exc
    except OSError as exc:
        raise UpstreamUnreachable(
            f"cannot connect to {dest.host}:{dest.port} ({exc.strerror or exc})"
        ) from exc


class Upstream:
    """One open upstream connection as streams (the control-plane client's)."""

    __slots__ = ("idle_since", "key", "reader", "writer")

    def __init__(self, key: tuple, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.key, self.reader, self.writer = key, reader, writer
        self.idle_since = 0.0

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof() and not self.reader._buffer  # type: ignore[attr-defined]

    def close(self) -> None:
        self.writer.transport.abort()


class _IdlePool(Generic[_Conn]):
    """Idle connections per destination key, newest first, dropped once stale or unusable."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        idle_timeout: float,
        max_idle_per_upstream: int = DEFAULT_MAX_IDLE_PER_UPSTREAM,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle_per_upstream
        self._idle: dict[tuple, list[_Conn]] = {}

    def _take_idle(self, key: tuple) -> _Conn | None:
        idle = self._idle.get(key)
        if idle:
            deadline = time.monotonic() - self.idle_timeout
            while idle:
                conn = idle.pop()
                if conn.idle_since > deadline and conn.usable():
                    return conn
                conn.close()
        return None

    def _keep_idle(self, conn: _Conn) -> None:
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) >= self.max_idle or not conn.usable():
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    def close(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
        self._idle.clear()


class UpstreamPool(_IdlePool[Upstream]):
    """`acquire` returns (connection, reused); `release` keeps a clean connection for reuse."""

    async def acquire(self, dest: Destination) -> tuple[Upstream, bool]:
        conn = self._take_idle(dest.key)
        if conn is not None:
            return conn, True
        return await self.connect(dest), False

    async def connect(self, dest: Destination) -> Upstream:
        with _translated(dest):
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    dest.host,
                    dest.port,
                    ssl=dest.ssl,
                    server_hostname=dest.server_hostname if dest.ssl else None,
                    limit=_STREAM_LIMIT,
                )
        return Upstream(dest.key, reader, writer)

    release = _IdlePool._keep_idle


class PooledProtocol(asyncio.Protocol):
    """Base of an upstream connection driven by callbacks (the fast path): key, transport, idle time."""

    key: tuple = ()
    transport: asyncio.Transport | None = None
    idle_since = 0.0
    lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True

    def usable(self) -> bool:
        return not self.lost and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class ConnectionPool(_IdlePool[PooledProtocol]):
    """Idle callback-driven upstream connections per destination key (the fast path's pool)."""

    # Aliases, not wrappers: the fast path calls these once per request.
    take = _IdlePool._take_idle
    give = _IdlePool._keep_idle

    async def connect(self, dest: Destination, factory: Callable[[], PooledProtocol]) -> PooledProtocol:
        loop = asyncio.get_running_loop()
        with _translated(dest):
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    factory,
                    dest.host,
                    dest.port,
                    ssl=dest.ssl,
                    server_hostname=dest.server_hostname if dest.ssl else None,
                )
        conn.key = dest.key
        return conn
