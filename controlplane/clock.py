"""Time, injected: the app reads the clock only through a `Clock` so tests can advance it."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol

__all__ = ["Clock", "FakeClock", "SystemClock", "format_ts", "parse_ts"]


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the epoch."""
        ...


class SystemClock:
    """The real wall clock."""

    def time(self) -> float:
        return time.time()


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, start: float = 1_780_000_000.0) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def format_ts(epoch: float) -> str:
    """RFC 3339 UTC with milliseconds; sorts lexicographically, which the store relies on."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def parse_ts(text: str) -> float:
    """Parse an RFC 3339 timestamp (Z or offset; naive means UTC) into epoch seconds."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()
