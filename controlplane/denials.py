"""Denials of callers that never authenticated, aggregated in the audit log.

Anyone can send a bad key, a forged token or a malformed review, so one row per attempt would let
anyone grow the log without bound. Per (type, source address, reason, detail, route) and interval, the
first denial is written at once as it always was (with `extra.count` 1) and the rest are counted;
when the interval ends one more row carries their `extra.count`. Summing `count` over the rows
gives every denial: nothing is lost, and a flood from one source costs two rows per interval.
At most `max_keys` keys are held per interval; more sources fold into source `*`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import web

from controlplane.appkeys import REQUEST_ID
from controlplane.audit import AuditWriter
from controlplane.clock import Clock
from controlplane.metrics import Metrics
from controlplane.source_limits import source_of

__all__ = ["DEFAULT_MAX_KEYS", "DENIALS", "DenialLog", "audit_unauthenticated"]

log = logging.getLogger(__name__)

DEFAULT_MAX_KEYS = 10_000
_Key = tuple[str, str, str, str | None, str]  # type, source, reason, detail, route template


class DenialLog:
    """Owns the per-interval counts and the named task that writes them when an interval ends."""

    def __init__(
        self,
        audit: AuditWriter,
        clock: Clock,
        *,
        interval_seconds: float,
        metrics: Metrics | None = None,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        self._audit = audit
        self._clock = clock
        self._metrics = metrics
        self._interval = interval_seconds
        self._max_keys = max_keys
        self._counts: dict[_Key, int] = {}  # denials after the first in this interval
        self._extras: dict[_Key, dict[str, Any]] = {}
        self._window_start = clock.time()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sesame-denial-log")

    async def close(self) -> None:
        """Write what was counted, then stop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def record(
        self,
        *,
        type: str,
        source: str,
        reason: str,
        detail: str | None = None,
        route: str = "",
        correlation_id: str | None = None,
        extra: dict[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        """Count one denial; the first of its key in this interval is written (and committed) now."""
        if self._metrics is not None:
            self._metrics.unauthenticated_denial(type, reason)
        if self._clock.time() - self._window_start >= self._interval:
            await self.flush()
        key: _Key = (type, source, reason, detail, route)
        if key not in self._counts and len(self._counts) >= self._max_keys:
            key = (type, "*", reason, detail, route)
        if key in self._counts:
            self._counts[key] += 1
            return
        self._counts[key] = 0
        self._extras[key] = dict(extra or {})
        await self._audit.record(
            type=type,
            actor="anonymous",
            outcome="denied",
            reason=reason,
            correlation_id=correlation_id,
            extra={**(extra or {}), **({"detail": detail} if detail else {}), "source": source, "count": 1},
            **fields,
        )

    async def flush(self) -> None:
        """One row per key with denials after its first: `extra.count` says how many."""
        counts, extras = self._counts, self._extras
        self._counts, self._extras = {}, {}
        started, self._window_start = self._window_start, self._clock.time()
        await asyncio.gather(
            *(
                self._audit.record(
                    type=type,
                    actor="anonymous",
                    outcome="denied",
                    reason=reason,
                    extra={
                        **extras.get((type, source, reason, detail, route), {}),
                        **({"detail": detail} if detail else {}),
                        "source": source,
                        "count": count,
                        "aggregated_seconds": round(self._window_start - started, 3),
                    },
                )
                for (type, source, reason, detail, route), count in counts.items()
                if count
            )
        )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except Exception as exc:  # the audit writer is down: the counts are lost, say so
                log.error("could not write aggregated denials: %s", exc)


DENIALS = web.AppKey("denials", DenialLog)


async def audit_unauthenticated(
    request: web.Request,
    *,
    type: str,
    reason: str,
    detail: str | None = None,
    extra: dict[str, Any] | None = None,
    **fields: Any,
) -> None:
    """Audit a denial of a caller that did not authenticate, aggregated by its source address."""
    resource = request.match_info.route.resource
    await request.app[DENIALS].record(
        type=type,
        source=source_of(request),
        reason=reason,
        detail=detail,
        route=resource.canonical if resource is not None else "unmatched",
        correlation_id=request.get(REQUEST_ID),
        extra=extra,
        **fields,
    )
