"""The audit log table: appends in batches, filtered pages, export streams, prune, chain walk.

Hashing is the audit module's job; this module only stores `prev_hash`/`hash` and keeps two meta
values: `audit_head` (hash of the newest row) and `audit_anchor` (prev_hash expected of the oldest
row, which changes when old rows are pruned).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from controlplane.pagination import Page
from controlplane.store.sqlite.db import Database

__all__ = ["AUDIT_FIELDS", "GENESIS", "SqliteAudit"]

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


class SqliteAudit:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def append(self, rows: list[dict[str, Any]], *, head: str) -> None:
        """Insert rows (each with every AUDIT_FIELD, prev_hash, hash) and move the head, atomically."""
        cols = (*AUDIT_FIELDS, "prev_hash", "hash")
        sql = f"INSERT INTO audit_events ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})"
        async with self._db.write() as conn:
            await conn.executemany(sql, [tuple(r[c] for c in cols) for r in rows])
            await conn.execute(
                "INSERT INTO meta(key, value) VALUES ('audit_head', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (head,),
            )

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
        where, params = _where(filters, since, until)
        if before_seq is not None:
            where.append("seq < ?")
            params.append(before_seq)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._db.fetchall(
            f"SELECT {_SELECT} FROM audit_events {clause} ORDER BY seq DESC LIMIT ?", [*params, limit + 1]
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows=[_event(r) for r in rows], next_seq=rows[-1]["seq"] if more else None)

    async def export(
        self, *, filters: dict[str, Any], since: str | None, until: str | None, limit: int
    ) -> AsyncIterator[dict[str, Any]]:
        """Oldest first from `since`, at most `limit` rows."""
        where, params = _where(filters, since, until)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        async for row in self._db.iterate(
            f"SELECT {_SELECT} FROM audit_events {clause} ORDER BY seq LIMIT ?", [*params, limit]
        ):
            yield _event(row)

    async def chain(self) -> AsyncIterator[dict[str, Any]]:
        """Every stored row, oldest first, raw (for verification)."""
        async for row in self._db.iterate(f"SELECT {_SELECT} FROM audit_events ORDER BY seq"):
            yield row

    async def prune(self, *, before: str) -> int:
        """Delete rows older than `before`; the oldest survivor's prev_hash becomes the anchor."""
        async with self._db.write() as conn:
            cur = await conn.execute("DELETE FROM audit_events WHERE ts < ?", (before,))
            deleted = cur.rowcount
            if deleted:
                async with conn.execute("SELECT prev_hash FROM audit_events ORDER BY seq LIMIT 1") as c:
                    row = await c.fetchone()
                if row is None:
                    async with conn.execute("SELECT value FROM meta WHERE key = 'audit_head'") as c:
                        row = await c.fetchone()
                await conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('audit_anchor', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (row[0] if row else GENESIS,),
                )
            return deleted

    async def _meta(self, key: str) -> str | None:
        row = await self._db.fetchone("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else row["value"]


def _where(filters: dict[str, Any], since: str | None, until: str | None) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    for col, value in filters.items():
        if col not in _FILTERS:
            raise ValueError(f"not an audit filter: {col}")
        if value is not None:
            where.append(f"{col} = ?")
            params.append(value)
    if since is not None:
        where.append("ts >= ?")
        params.append(since)
    if until is not None:
        where.append("ts < ?")
        params.append(until)
    return where, params


def _event(row: dict[str, Any]) -> dict[str, Any]:
    event = {k: row[k] for k in AUDIT_FIELDS if k not in ("ts", "extra")}
    event["timestamp"] = row["ts"]
    event["extra"] = json.loads(row["extra"]) if row["extra"] else {}
    return event
