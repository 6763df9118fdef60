"""Time, injected: the app reads the clock only through a `Clock` so tests can advance it."""

from __future__ import annotations

import math
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


_last_second: tuple[int, str] = (-1, "")


def format_ts(epoch: float) -> str:
    """RFC 3339 UTC with milliseconds; sorts lexicographically, which the store relies on.

    Called for every audit event: the `YYYY-MM-DDTHH:MM:SS` part is formatted once per second.
    """
    global _last_second
    fraction, whole = math.modf(epoch)  # split and rounded like datetime.fromtimestamp
    micros, second = round(fraction * 1e6), int(whole)
    if micros >= 1_000_000:
        micros, second = micros - 1_000_000, second + 1
    cached_second, prefix = _last_second
    if second != cached_second:
        prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _last_second = (second, prefix)
    return f"{prefix}.{micros // 1000:03d}Z"


def parse_ts(text: str) -> float:
    """Parse an RFC 3339 timestamp (Z or offset; naive means UTC) into epoch seconds."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()
