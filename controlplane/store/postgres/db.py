"""A PostgreSQL database through an asyncpg pool (implements `store.sql.database.Database`).

Shared SQL is mapped by `dialect`; transactions run at READ COMMITTED, and cross-replica
serialisation uses advisory locks: session-level while migrating, transaction-level otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from controlplane.clock import SystemClock, format_ts
from controlplane.errors import StartupError
from controlplane.store.dsn import redact_dsn
from controlplane.store.postgres.dialect import MIGRATION_LOCK, ddl, lock_key, placeholders, translate_error

__all__ = ["DEFAULT_COMMAND_TIMEOUT", "DEFAULT_POOL_MAX_SIZE", "Database", "PostgresTransaction"]

log = logging.getLogger(__name__)

DEFAULT_POOL_MAX_SIZE = 10
DEFAULT_COMMAND_TIMEOUT = 30.0
_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


class Database:
    """One PostgreSQL database; `fetch*` for queries, `write()` for one transaction."""

    def __init__(
        self,
        dsn: str,
        *,
        pool_max_size: int = DEFAULT_POOL_MAX_SIZE,
        command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
    ) -> None:
        self.dsn = dsn
        self._pool_max_size = max(2, pool_max_size)  # migrating holds one connection while using another
        self._command_timeout = command_timeout
        self._pool: asyncpg.Pool = None  # type: ignore[assignment]  # set by connect()

    async def connect(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=self._pool_max_size, command_timeout=self._command_timeout
            )
        except (*_ERRORS, ValueError) as exc:
            raise StartupError(f"cannot connect to {redact_dsn(self.dsn)}: {exc}") from exc

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
        self._pool = None  # type: ignore[assignment]

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        try:
            return [dict(r) for r in await self._pool.fetch(placeholders(sql), *params)]
        except _ERRORS as exc:
            raise translate_error(exc, "read") from exc

    @asynccontextmanager
    async def write(self) -> AsyncIterator[PostgresTransaction]:
        """One transaction; commits on success, rolls back on error."""
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                yield PostgresTransaction(conn)
        except _ERRORS as exc:
            raise translate_error(exc, "write") from exc

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Bulk insert in one transaction (benchmarks and seeding)."""
        async with self.write() as tx:
            await tx.executemany(sql, rows)

    @asynccontextmanager
    async def migrating(self) -> AsyncIterator[None]:
        """Hold the migration advisory lock: replicas starting together migrate one at a time."""
        key = lock_key(MIGRATION_LOCK)
        try:
            async with self._pool.acquire() as conn:
                await conn.execute("SELECT pg_advisory_lock($1)", key)
                try:
                    yield
                finally:
                    await conn.execute("SELECT pg_advisory_unlock($1)", key)
        except _ERRORS as exc:
            raise StartupError(f"database migration failed: {exc}") from exc

    async def apply_migration(self, version: int, name: str, sql: str) -> None:
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(ddl(sql))
                await conn.execute(
                    "INSERT INTO schema_migrations(version, name, applied_at) VALUES ($1, $2, $3)",
                    version,
                    name,
                    format_ts(SystemClock().time()),
                )
        except _ERRORS as exc:
            raise StartupError(f"database migration {version} failed: {exc}") from exc


class PostgresTransaction:
    """A connection inside `Database.write()`."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> _Status:
        return _Status(await self._conn.execute(placeholders(sql), *params))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._conn.executemany(placeholders(sql), list(rows))

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        row = await self._conn.fetchrow(placeholders(sql), *params)
        return None if row is None else dict(row)

    async def lock(self, name: str) -> None:
        """A transaction-level advisory lock, released at COMMIT/ROLLBACK."""
        await self._conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(name))


class _Status:
    """`rowcount` from a command status such as `DELETE 3` or `INSERT 0 1`."""

    def __init__(self, status: str) -> None:
        last = status.rsplit(" ", 1)[-1]
        self.rowcount = int(last) if last.isdigit() else 0
