"""The store both backends share: repositories over one `Database`, migrations, probes."""

from __future__ import annotations

from typing import Any, Self

from controlplane.ratelimit import RateCounter
from controlplane.store.sql.api_keys import SqlApiKeys
from controlplane.store.sql.audit import SqlAudit
from controlplane.store.sql.database import Database
from controlplane.store.sql.migrations import SEALED_COLUMNS, pending
from controlplane.store.sql.registry import SqlRegistry

__all__ = ["SqlStore"]

_SCHEMA_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations "
    "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
)


class SqlStore:
    """Implements `controlplane.store.Store`; `db` is exposed for repositories added later."""

    # Several replicas may share this database (PostgreSQL): they then count rate limits in it.
    shared = False

    def __init__(self, db: Database) -> None:
        self.db = db
        self.registry = SqlRegistry(db)
        self.api_keys = SqlApiKeys(db)
        self.audit = SqlAudit(db)
        self.rate_limits: RateCounter | None = None

    @classmethod
    async def open(cls, *args: Any) -> Self:
        """A connected, migrated store (`args` as for the backend's constructor)."""
        store = cls(*args)
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
        row = await self.db.fetchone("SELECT max(version) AS v FROM schema_migrations")
        return (row or {}).get("v") or 0

    async def migrate(self) -> list[int]:
        """Apply pending migrations in order (one replica at a time); returns the versions applied."""
        applied = []
        async with self.db.migrating():
            async with self.db.write() as tx:
                await tx.execute(_SCHEMA_TABLE)
            for migration in pending(await self.schema_version()):
                sql = migration.sql + (migration.postgres if self.shared else "")
                await self.db.apply_migration(migration.version, migration.name, sql)
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
