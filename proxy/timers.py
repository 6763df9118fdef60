"""Timers for the callback-driven fast path."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["Watchdog"]


class Watchdog:
    """One lazily re-armed timer: `arm` only moves a deadline; the timer re-schedules itself until the
    deadline really passes (cheaper than a call_later + cancel per request or per chunk)."""

    __slots__ = ("_deadline", "_handle", "_loop", "_on_expire", "_when")

    def __init__(self, loop: asyncio.AbstractEventLoop, on_expire: Callable[[], None]) -> None:
        self._loop, self._on_expire = loop, on_expire
        self._deadline: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._when = 0.0

    def arm(self, timeout: float) -> None:
        self._deadline = deadline = self._loop.time() + timeout
        if self._handle is not None:
            if deadline >= self._when:
                return  # the timer fires earlier and re-schedules itself
            self._handle.cancel()
        self._when = deadline
        self._handle = self._loop.call_at(deadline, self._fire)

    def cancel(self) -> None:
        self._deadline = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        if self._deadline is None:
            return
        if self._loop.time() < self._deadline:
            self._when = self._deadline
            self._handle = self._loop.call_at(self._deadline, self._fire)
            return
        self._deadline = None
        self._on_expire()
