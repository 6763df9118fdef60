"""One SQLite database in WAL mode: a writer connection (serialised by a lock) and a reader.

WAL lets the reader see committed data while the writer holds a transaction, so reads never see
another task's uncommitted rows. sqlite errors are translated to `StoreError` here.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from controlplane.errors import StartupError, StoreError

__all__ = ["Database"]

log = logging.getLogger(__name__)

_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",  # a committed audit row survives power loss
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=5000",
)


class Database:
    """Async access to one SQLite file; use `read*` for queries and `write()` for transactions."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: aiosqlite.Connection = None  # type: ignore[assignment]  # set by connect()
        self._reader: aiosqlite.Connection = None  # type: ignore[assignment]
        self._lock = asyncio.Lock()

    async def connect(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = await aiosqlite.connect(self.path, isolation_level=None)
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
            for conn in (self._writer, self._reader):
                conn.row_factory = sqlite3.Row
                for pragma in _PRAGMAS:
                    await conn.execute(pragma)
        except (sqlite3.Error, OSError) as exc:
            await self.close()
            raise StartupError(f"cannot open database {self.path}: {exc}") from exc

    async def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is None:
                continue
            try:
                await conn.close()
            except sqlite3.Error:  # pragma: no cover - closing a broken connection
                log.warning("error closing database connection", exc_info=True)
        self._reader = self._writer = None  # type: ignore[assignment]

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        try:
            async with self._reader.execute(sql, params) as cur:
                return [dict(row) for row in await cur.fetchall()]
        except sqlite3.Error as exc:
            raise StoreError(f"database read failed: {exc}") from exc

    async def iterate(
        self, sql: str, params: Sequence[Any] = (), *, batch: int = 1000
    ) -> AsyncIterator[dict]:
        """Stream rows of one query (used by exports)."""
        try:
            async with self._reader.execute(sql, params) as cur:
                while rows := await cur.fetchmany(batch):
                    for row in rows:
                        yield dict(row)
        except sqlite3.Error as exc:
            raise StoreError(f"database read failed: {exc}") from exc

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One immediate write transaction; commits on success, rolls back on error.

        `sqlite3.IntegrityError` passes through untranslated so repositories can turn it into
        `Conflict`; any other sqlite error becomes `StoreError`.
        """
        async with self._lock:
            try:
                await self._writer.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"database write failed: {exc}") from exc
            try:
                yield self._writer
                await self._writer.execute("COMMIT")
            except BaseException as exc:
                try:
                    await self._writer.execute("ROLLBACK")
                except sqlite3.Error:
                    log.warning("rollback failed", exc_info=True)
                if isinstance(exc, sqlite3.Error) and not isinstance(exc, sqlite3.IntegrityError):
                    raise StoreError(f"database write failed: {exc}") from exc
                raise

    async def execute_script(self, script: str) -> None:
        """Run a multi-statement script (migrations) under the write lock."""
        async with self._lock:
            try:
                await self._writer.executescript(script)
            except sqlite3.Error as exc:
                if self._writer.in_transaction:
                    await self._writer.execute("ROLLBACK")
                raise StartupError(f"database migration failed: {exc}") from exc

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Bulk insert in one transaction (benchmarks and seeding)."""
        async with self.write() as conn:
            await conn.executemany(sql, rows)
