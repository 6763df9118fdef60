"""Bounds on app connections: a maximum count, with the longest-idle connection closed to make room,
and the memory of a burst handed back to the system once it is over."""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
import time
from typing import Protocol

from proxy.metrics import Value

__all__ = ["ConnectionLimiter", "default_max_connections", "raise_fd_limit"]

_FDS_RESERVED = 64  # listeners, the control plane, logs, certificate files
_TRIM_AFTER = 256  # a burst of at least this many connections is worth a malloc_trim once it ends


class _Tracked(Protocol):
    transport: object

    def evictable(self) -> bool: ...


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (as most servers do); the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def default_max_connections(nofile: int | None = None) -> int:
    """Half the file descriptors left after the reserve: each app connection may hold an upstream one."""
    if nofile is None:
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if nofile == resource.RLIM_INFINITY:
        nofile = 1 << 20
    return max(16, (nofile - _FDS_RESERVED) // 2)


def _malloc_trim():  # pragma: no cover - depends on the C library
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


class ConnectionLimiter:
    """Tracks open app connections, least recently active first.

    At the limit, a new connection closes the longest-idle connection that is idle or still sending
    its head; when every connection is busy with an exchange, the new one is refused.
    """

    def __init__(self, limit: int, gauge: Value, *, clock=time.monotonic) -> None:
        self.limit = limit
        self._gauge = gauge
        self._conns: dict[_Tracked, None] = {}
        self._clock = clock
        self._peak = 0
        self._trim = _malloc_trim()
        self.evicted = 0
        self.refused = 0

    def __len__(self) -> int:
        return len(self._conns)

    def connections(self) -> list[_Tracked]:
        return list(self._conns)

    def track(self, conn: _Tracked, alive: bool) -> bool:
        """`alive`: opened or active again (moves to the back); False: closed. False when refused."""
        conns = self._conns
        if not alive:
            if conns.pop(conn, 0) is None:
                self._gauge.dec()
                self._maybe_trim()
            return True
        if conn in conns:
            del conns[conn]
            conns[conn] = None
            return True
        if len(conns) >= self.limit and not self._evict():
            self.refused += 1
            return False
        conns[conn] = None
        self._gauge.inc()
        self._peak = max(self._peak, len(conns))
        return True

    def _evict(self) -> bool:
        for old in self._conns:
            if old.evictable():
                del self._conns[old]
                self._gauge.dec()
                self.evicted += 1
                old.transport.abort()  # type: ignore[attr-defined]
                return True
        return False

    def _maybe_trim(self) -> None:
        """After a burst (e.g. many slow partial heads), give freed heap pages back to the system."""
        if self._peak >= _TRIM_AFTER and len(self._conns) <= self._peak // 4 and self._trim is not None:
            self._peak = len(self._conns)
            self._trim(0)
