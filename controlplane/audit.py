"""The audit log: a batching, hash-chained writer and the chain verifier.

`await writer.record(type=..., actor=..., outcome=...)` returns only after the event's row is
committed; concurrent calls share one transaction (group commit). Each row stores
`hash = sha256(prev_hash | canonical fields)`, so editing or deleting any row breaks the chain.
The store links each batch to the head it reads inside its locked transaction, so several
replicas writing one database extend one chain.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from controlplane.clock import Clock, format_ts
from controlplane.errors import SesameError
from controlplane.ids import new_id
from controlplane.logs import note_audit_event
from controlplane.metrics import Metrics
from controlplane.store.base import AuditStore
from controlplane.store.sql.audit import AUDIT_FIELDS
from controlplane.store.sql.database import Transaction

__all__ = ["AuditWriter", "ChangeAudit", "event_hash", "link_rows", "verify_chain"]

log = logging.getLogger(__name__)

DEFAULT_BATCH_MAX = 500
DEFAULT_QUEUE_MAX = 10_000


class AuditUnavailable(SesameError):
    """The audit writer is stopped or its database write failed: the request must not succeed."""

    code, status = "audit_unavailable", 503


def event_hash(prev_hash: str, row: dict[str, Any]) -> str:
    canonical = json.dumps([row[f] for f in AUDIT_FIELDS], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{prev_hash}|{canonical}".encode()).hexdigest()


def link_rows(prev_hash: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`rows` chained after `prev_hash`: each gets its `prev_hash` and `hash`."""
    linked = []
    for row in rows:
        row = {**row, "prev_hash": prev_hash}
        row["hash"] = prev_hash = event_hash(prev_hash, row)
        linked.append(row)
    return linked


class ChangeAudit:
    """Called by the store inside a write's transaction (`AuditHook`); keeps the rows it wrote."""

    def __init__(self, writer: AuditWriter, event_of: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self._writer = writer
        self._event_of = event_of
        self.rows: list[dict[str, Any]] = []

    async def __call__(self, tx: Transaction, record: dict[str, Any]) -> None:
        row = self._writer._row(**self._event_of(record))
        self.rows = await self._writer._store.append_in(tx, [row], link=link_rows)


class AuditWriter:
    """Owns the single background task that appends audit rows in batches."""

    def __init__(
        self,
        store: AuditStore,
        clock: Clock,
        *,
        batch_max: int = DEFAULT_BATCH_MAX,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self._batch_max = batch_max
        self._queue: asyncio.Queue[tuple[dict[str, Any], asyncio.Future[None]] | None] = asyncio.Queue(
            DEFAULT_QUEUE_MAX
        )
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sesame-audit-writer")

    async def close(self) -> None:
        """Write what is queued, then stop."""
        if self._task is None:
            return
        await self._queue.put(None)
        await self._task
        self._task = None

    async def record(
        self,
        *,
        type: str,
        actor: str,
        outcome: str,
        workload_id: str | None = None,
        target_service: str | None = None,
        audience: str | None = None,
        ttl_seconds: int | None = None,
        reason: str | None = None,
        correlation_id: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Append one event and wait until it is committed; returns the event as /v1/audit shows it."""
        if not self.running:
            raise AuditUnavailable("audit writer is not running")
        row = self._row(
            type=type,
            actor=actor,
            outcome=outcome,
            workload_id=workload_id,
            target_service=target_service,
            audience=audience,
            ttl_seconds=ttl_seconds,
            reason=reason,
            correlation_id=correlation_id,
            extra=extra,
        )
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queued = time.monotonic()
        await self._queue.put((row, done))
        await done
        note_audit_event(row["id"])
        if self._metrics is not None:
            self._metrics.audit_lag(time.monotonic() - queued)
        event = {k: v for k, v in row.items() if k not in ("ts", "extra")}
        return {**event, "timestamp": row["ts"], "extra": extra or {}}

    def hook(self, event_of: Callable[[dict[str, Any]], dict[str, Any]]) -> ChangeAudit:
        """An audit hook for a store write: the event (`record` keywords) built from the stored
        record is appended to the chain inside the write's own transaction, so the change and its
        audit row commit together or not at all. Count it with `committed()` afterwards."""
        if not self.running:
            raise AuditUnavailable("audit writer is not running")
        return ChangeAudit(self, event_of)

    def committed(self, hook: ChangeAudit) -> None:
        """Count the rows a hook wrote once their transaction has committed."""
        for row in hook.rows:
            note_audit_event(row["id"])
            if self._metrics is not None:
                self._metrics.audit_written(row["type"])

    def _row(self, *, extra: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
        row = {"id": new_id("evt"), "ts": format_ts(self._clock.time())}
        for name in ("type", "actor", "outcome", "workload_id", "target_service", "audience"):
            row[name] = _storable(fields.get(name))
        row["ttl_seconds"] = fields.get("ttl_seconds")
        row["reason"] = _storable(fields.get("reason"))
        row["correlation_id"] = _storable(fields.get("correlation_id"))
        row["extra"] = json.dumps(extra, sort_keys=True, separators=(",", ":")) if extra else None
        return row

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            batch = []
            if first is None:
                stopping = True
            else:
                batch.append(first)
            while len(batch) < self._batch_max and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stopping = True
                else:
                    batch.append(item)
            if batch:
                await self._write(batch)

    async def _write(self, batch: list[tuple[dict[str, Any], asyncio.Future[None]]]) -> None:
        try:
            rows = await self._store.append([row for row, _ in batch], link=link_rows)
        except Exception as exc:
            log.error("audit write failed: %s", exc)
            error = AuditUnavailable("audit log write failed")
            for _, done in batch:
                if not done.done():
                    done.set_exception(error)
            return
        if self._metrics is not None:
            for type, count in Counter(row["type"] for row in rows).items():
                self._metrics.audit_written(type, count)
        for _, done in batch:
            if not done.done():
                done.set_result(None)


async def verify_chain(store: AuditStore) -> dict[str, Any]:
    """Walk every row: `{ok, checked, first_bad_id}` (first_bad_id None with ok False: tail missing)."""
    head = await store.head()
    expected = await store.anchor()
    checked = 0
    saw_head = head == expected
    async for row in store.chain():
        if row["prev_hash"] != expected or event_hash(row["prev_hash"], row) != row["hash"]:
            return {"ok": False, "checked": checked, "first_bad_id": row["id"]}
        expected = row["hash"]
        checked += 1
        saw_head = saw_head or expected == head
    if not saw_head:
        return {"ok": False, "checked": checked, "first_bad_id": None, "reason": "newest events are missing"}
    return {"ok": True, "checked": checked, "first_bad_id": None}


def _storable(text: str | None) -> str | None:
    """Text any backend can store: a lone surrogate (not valid UTF-8) becomes its escape.

    One unstorable event would otherwise fail the whole batch it shares with other requests.
    """
    if text is None or text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
