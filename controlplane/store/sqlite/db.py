"""One SQLite database in WAL mode: a writer connection (serialised by a lock) and a reader.

WAL lets the reader see committed data while the writer holds a transaction, so reads never see
another task's uncommitted rows. sqlite errors are translated here: a broken unique index to
`UniqueViolation`, others to `StoreError` (implements `controlplane.store.sql.database.Database`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from controlplane.errors import StartupError, StoreError
from controlplane.store.sql.database import UniqueViolation

__all__ = ["Database"]

log = logging.getLogger(__name__)
T = TypeVar("T")

_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=5000",
)
# FULL (default): every commit is fsynced, so an answered request's audit row survives a power
# loss. NORMAL: a commit survives a crash of the process but not a power loss; faster.
SYNCHRONOUS_MODES = ("full", "normal")


class Database:
    """Async access to one SQLite file; use `read*` for queries and `write()` for transactions."""

    def __init__(self, path: Path, *, synchronous: str = "full") -> None:
        if synchronous not in SYNCHRONOUS_MODES:
            raise StartupError(f"SQLite synchronous mode must be one of {SYNCHRONOUS_MODES}")
        self.path = path
        self._pragmas = (*_PRAGMAS, f"PRAGMA synchronous={synchronous.upper()}")
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
                for pragma in self._pragmas:
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
        try:  # one hop to the connection's thread (execute + fetch + close would take three)
            return [dict(row) for row in await self._reader.execute_fetchall(sql, params)]
        except sqlite3.Error as exc:
            raise StoreError(f"database read failed: {exc}") from exc

    @asynccontextmanager
    async def write(self) -> AsyncIterator[SqliteTransaction]:
        """One immediate write transaction; commits on success, rolls back on error."""
        async with self._lock:
            try:
                await self._writer.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"database write failed: {exc}") from exc
            try:
                yield SqliteTransaction(self._writer)
                await self._writer.execute("COMMIT")
            except BaseException as exc:
                try:
                    await self._writer.execute("ROLLBACK")
                except sqlite3.Error:
                    log.warning("rollback failed", exc_info=True)
                if isinstance(exc, sqlite3.Error):
                    raise _translate(exc) from exc
                raise

    async def transact(self, work: Callable[[_ThreadTransaction], T]) -> T:
        """Run `work` inside BEGIN IMMEDIATE … COMMIT in ONE hop to the writer's thread.

        `write()` costs one hop (a queue hand-off and a loop wake-up) per statement; the audit
        writer's batch runs here instead. Serialised with `write()` by the same lock.
        """
        async with self._lock:
            try:
                # aiosqlite runs callables on its connection thread only through `_execute`.
                return await self._writer._execute(_run_transaction, self._writer._conn, work)
            except sqlite3.Error as exc:
                raise _translate(exc) from exc

    @asynccontextmanager
    async def migrating(self) -> AsyncIterator[None]:
        """Migrations of one file run under BEGIN IMMEDIATE; nothing more to hold."""
        yield

    async def apply_migration(self, version: int, name: str, sql: str) -> None:
        name = name.replace("'", "''")
        await self.execute_script(
            f"BEGIN IMMEDIATE;\n{sql}\nINSERT INTO schema_migrations(version, name, applied_at) "
            f"VALUES ({version}, '{name}', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));\nCOMMIT;"
        )

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


class SqliteTransaction:
    """The writer connection inside `Database.write()`; `execute` returns the cursor (`.rowcount`)."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Cursor:
        return await self._conn.execute(sql, params)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._conn.executemany(sql, rows)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        rows = await self._conn.execute_fetchall(sql, params)  # one hop to the connection's thread
        return dict(rows[0]) if rows else None

    async def lock(self, name: str) -> None:
        """BEGIN IMMEDIATE already excludes every other writer of the file."""


class _ThreadTransaction:
    """The writer's sqlite3 connection inside `Database.transact()` (runs on its thread)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._conn.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._conn.executemany(sql, rows)

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        row = self._conn.execute(sql, params).fetchone()
        return None if row is None else dict(row)


def _run_transaction(conn: sqlite3.Connection, work: Callable[[_ThreadTransaction], T]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(_ThreadTransaction(conn))
        conn.execute("COMMIT")
    except BaseException:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.warning("rollback failed", exc_info=True)
        raise
    return result


_UNIQUE = re.compile(r"UNIQUE constraint failed: (?:index '(?P<index>[^']+)'|(?P<columns>.+))")


def _translate(exc: sqlite3.Error) -> Exception:
    match = _UNIQUE.search(str(exc)) if isinstance(exc, sqlite3.IntegrityError) else None
    if match is None:
        return StoreError(f"database write failed: {exc}")
    columns = tuple(c.strip().split(".")[-1] for c in (match["columns"] or "").split(",") if c.strip())
    return UniqueViolation(index=match["index"], columns=columns)
