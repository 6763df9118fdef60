"""The SQLite store (aiosqlite, WAL): the embedded default backend."""

from __future__ import annotations

from pathlib import Path

from controlplane.store.sqlite.api_keys import SqliteApiKeys
from controlplane.store.sqlite.audit import SqliteAudit
from controlplane.store.sqlite.db import Database
from controlplane.store.sqlite.migrations import SEALED_COLUMNS, pending, script_for
from controlplane.store.sqlite.registry import SqliteRegistry

__all__ = ["SqliteStore"]


class SqliteStore:
    """Implements `controlplane.store.Store`; `db` is exposed for repositories added later."""

    def __init__(self, path: Path) -> None:
        self.db = db = Database(path)
        self.registry = SqliteRegistry(db)
        self.api_keys = SqliteApiKeys(db)
        self.audit = SqliteAudit(db)

    @classmethod
    async def open(cls, path: Path) -> SqliteStore:
        """A connected, migrated store."""
        store = cls(path)
        await store.start()
        return store

    async def start(self) -> None:
        """Connect and apply pending migrations."""
        await self.db.connect()
        try:
            await self.migrate()
        except BaseException:
            await self.db.close()
            raise

    async def schema_version(self) -> int:
        await self.db.execute_script(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL);"
        )
        row = await self.db.fetchone("SELECT max(version) AS v FROM schema_migrations")
        return (row or {}).get("v") or 0

    async def migrate(self) -> list[int]:
        """Apply pending migrations in order; returns the versions applied."""
        applied = []
        for migration in pending(await self.schema_version()):
            await self.db.execute_script(script_for(migration))
            applied.append(migration.version)
        return applied

    async def ping(self) -> None:
        await self.db.fetchone("SELECT 1 AS ok")

    async def sealed_blobs(self) -> list[bytes]:
        blobs = []
        for table, column in SEALED_COLUMNS:
            row = await self.db.fetchone(
                f"SELECT {column} AS blob FROM {table} WHERE {column} IS NOT NULL LIMIT 1"
            )
            if row is not None:
                blobs.append(row["blob"])
        return blobs

    async def close(self) -> None:
        await self.db.close()
