"""The audit log table (either backend): chained appends, filtered pages, keyset exports, prune.

Hashing is the audit module's job (the `link` callback); this module stores `prev_hash`/`hash`
and two meta values: `audit_head` (hash of the newest row) and `audit_anchor` (prev_hash expected
of the oldest row, which changes when old rows are pruned). Appends and prunes take `AUDIT_LOCK`
and read the head inside their transaction, so replicas sharing one database extend one chain.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from controlplane.pagination import Page
from controlplane.store.sql.database import AUDIT_LOCK, Database, InThreadWrites, SyncTransaction, Transaction

__all__ = ["AUDIT_FIELDS", "DEFAULT_EXPORT_BATCH", "GENESIS", "ExportKey", "Link", "SqlAudit"]

DEFAULT_EXPORT_BATCH = 1000  # rows per internal keyset page of an export or chain walk

GENESIS = "0" * 64
AUDIT_FIELDS = (
    "id",
    "ts",
    "type",
    "actor",
    "outcome",
    "workload_id",
    "target_service",
    "audience",
    "ttl_seconds",
    "reason",
    "correlation_id",
    "extra",
)
_FILTERS = {"workload_id", "target_service", "type", "actor", "correlation_id"}
_SELECT = "seq, " + ", ".join(AUDIT_FIELDS) + ", prev_hash, hash"
_COLS = (*AUDIT_FIELDS, "prev_hash", "hash")
_INSERT = f"INSERT INTO audit_events ({', '.join(_COLS)}) VALUES ({', '.join('?' for _ in _COLS)})"
_GET_HEAD = "SELECT value FROM meta WHERE key = 'audit_head'"
_SET_META = "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"

ExportKey = tuple[str, int]  # (ts, seq): the order exports walk and their cursors name
Link = Callable[[str, list[dict[str, Any]]], list[dict[str, Any]]]  # (head, rows) -> chained rows


class SqlAudit:
    def __init__(self, db: Database, *, export_batch: int = DEFAULT_EXPORT_BATCH) -> None:
        self._db = db
        self._batch = export_batch

    async def append(self, rows: list[dict[str, Any]], *, link: Link) -> list[dict[str, Any]]:
        """Chain `rows` onto the stored head with `link` and insert them, in one locked transaction.

        SQLite runs the whole batch (read head, link, insert, move head, commit) in one hop to its
        thread; PostgreSQL takes the audit advisory lock so replicas extend one chain.
        """
        if isinstance(self._db, InThreadWrites):
            return await self._db.transact(lambda tx: _append_in_thread(tx, rows, link))
        async with self._db.write() as tx:
            return await self.append_in(tx, rows, link=link)

    async def append_in(
        self, tx: Transaction, rows: list[dict[str, Any]], *, link: Link
    ) -> list[dict[str, Any]]:
        """`append` inside the caller's open transaction: the rows commit (or roll back) with it."""
        await tx.lock(AUDIT_LOCK)
        head = await tx.fetchone(_GET_HEAD)
        chained = link(head["value"] if head else GENESIS, rows)
        await tx.executemany(_INSERT, _values(chained))
        await tx.execute(_SET_META, ("audit_head", chained[-1]["hash"]))
        return chained

    async def head(self) -> str:
        return await self._meta("audit_head") or GENESIS

    async def anchor(self) -> str:
        return await self._meta("audit_anchor") or GENESIS

    async def list(
        self,
        *,
        filters: dict[str, Any],
        since: str | None,
        until: str | None,
        limit: int,
        before_seq: int | None = None,
    ) -> Page:
        """Newest first."""
        clause, params = _where(filters, since, until, before_seq=before_seq)
        rows = await self._db.fetchall(
            f"SELECT {_SELECT} FROM audit_events {clause} ORDER BY seq DESC LIMIT ?", [*params, limit + 1]
        )
        return Page.from_rows(rows, limit, _event)

    async def export_end(
        self,
        *,
        filters: dict[str, Any],
        since: str | None,
        until: str | None,
        limit: int,
        after: ExportKey | None = None,
    ) -> tuple[ExportKey | None, bool]:
        """The key of the `limit`-th row an export would send (None: fewer rows) and whether more follow."""
        clause, params = _where(filters, since, until, after=after)
        rows = await self._db.fetchall(
            f"SELECT ts, seq FROM audit_events {clause} ORDER BY ts, seq LIMIT 2 OFFSET ?",
            [*params, limit - 1],
        )
        if not rows:
            return None, False
        return (rows[0]["ts"], rows[0]["seq"]), len(rows) > 1

    async def export(
        self,
        *,
        filters: dict[str, Any],
        since: str | None,
        until: str | None,
        limit: int,
        after: ExportKey | None = None,
        through: ExportKey | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """At most `limit` rows in (ts, seq) order, after `after` and up to `through`, each once.

        Walks keyset pages on (ts, seq), so rows sharing a timestamp are neither repeated nor skipped.
        """
        left = limit
        while left > 0:
            clause, params = _where(filters, since, until, after=after, through=through)
            size = min(self._batch, left)
            rows = await self._db.fetchall(
                f"SELECT {_SELECT} FROM audit_events {clause} ORDER BY ts, seq LIMIT ?", [*params, size]
            )
            for row in rows:
                yield _event(row)
            if len(rows) < size:
                return
            left -= size
            after = (rows[-1]["ts"], rows[-1]["seq"])

    async def chain(self) -> AsyncIterator[dict[str, Any]]:
        """Every stored row, oldest first, raw (for verification)."""
        after = 0
        while True:
            rows = await self._db.fetchall(
                f"SELECT {_SELECT} FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?", (after, self._batch)
            )
            for row in rows:
                yield row
            if len(rows) < self._batch:
                return
            after = rows[-1]["seq"]

    async def prune(self, *, before: str) -> int:
        """Delete rows older than `before`; the oldest survivor's prev_hash becomes the anchor."""
        async with self._db.write() as tx:
            await tx.lock(AUDIT_LOCK)
            deleted = (await tx.execute("DELETE FROM audit_events WHERE ts < ?", (before,))).rowcount
            if deleted:
                row = await tx.fetchone("SELECT prev_hash AS value FROM audit_events ORDER BY seq LIMIT 1")
                if row is None:
                    row = await tx.fetchone(_GET_HEAD)
                await tx.execute(_SET_META, ("audit_anchor", row["value"] if row else GENESIS))
            return deleted

    async def _meta(self, key: str) -> str | None:
        row = await self._db.fetchone("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else row["value"]


def _append_in_thread(tx: SyncTransaction, rows: list[dict[str, Any]], link: Link) -> list[dict[str, Any]]:
    """`append` as plain calls inside one transaction (BEGIN IMMEDIATE already excludes writers)."""
    head = tx.fetchone(_GET_HEAD)
    chained = link(head["value"] if head else GENESIS, rows)
    tx.executemany(_INSERT, _values(chained))
    tx.execute(_SET_META, ("audit_head", chained[-1]["hash"]))
    return chained


def _values(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [tuple(r[c] for c in _COLS) for r in rows]


def _where(
    filters: dict[str, Any],
    since: str | None,
    until: str | None,
    *,
    after: ExportKey | None = None,
    through: ExportKey | None = None,
    before_seq: int | None = None,
) -> tuple[str, list[Any]]:
    """The `WHERE ...` clause (empty when nothing filters) and its parameters."""
    where: list[str] = []
    params: list[Any] = []
    for col, value in filters.items():
        if col not in _FILTERS:
            raise ValueError(f"not an audit filter: {col}")
        if value is not None:
            where.append(f"{col} = ?")
            params.append(value)
    bounds = (
        ("ts >= ?", None if since is None else (since,)),
        ("ts < ?", None if until is None else (until,)),
        ("(ts, seq) > (?, ?)", after),
        ("(ts, seq) <= (?, ?)", through),
        ("seq < ?", None if before_seq is None else (before_seq,)),
    )
    for cond, values in bounds:
        if values is not None:
            where.append(cond)
            params.extend(values)
    return (f"WHERE {' AND '.join(where)}" if where else ""), params


def _event(row: dict[str, Any]) -> dict[str, Any]:
    event = {k: row[k] for k in AUDIT_FIELDS if k not in ("ts", "extra")}
    event["timestamp"] = row["ts"]
    event["extra"] = json.loads(row["extra"]) if row["extra"] else {}
    return event
