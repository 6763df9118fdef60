"""Storage: one `Store` interface, two backends sharing their SQL (`store/sql/`).

`SqliteStore` (a file; the embedded default) and `PostgresStore` (a `postgresql://` DSN; several
replicas share it). `new_store(location)` picks one; the PostgreSQL driver is imported only then.
"""

from __future__ import annotations

from pathlib import Path

from controlplane.store.base import ApiKey, ApiKeyStore, AuditStore, RegistryStore, Store
from controlplane.store.dsn import is_postgres_dsn, redact_dsn
from controlplane.store.sql import SqlStore
from controlplane.store.sqlite.store import SqliteStore

__all__ = [
    "ApiKey",
    "ApiKeyStore",
    "AuditStore",
    "RegistryStore",
    "SqlStore",
    "SqliteStore",
    "Store",
    "is_postgres_dsn",
    "new_store",
    "open_store",
    "redact_dsn",
]


def new_store(location: Path | str, *, sqlite_synchronous: str = "full") -> SqlStore:
    """An unopened store for a SQLite path or a `postgresql://` DSN (call `start()`)."""
    if isinstance(location, str) and is_postgres_dsn(location):
        from controlplane.store.postgres import PostgresStore

        return PostgresStore(location)
    return SqliteStore(Path(location), synchronous=sqlite_synchronous)


async def open_store(location: Path | str, *, sqlite_synchronous: str = "full") -> SqlStore:
    """Open (and migrate) the store at `location`."""
    store = new_store(location, sqlite_synchronous=sqlite_synchronous)
    await store.start()
    return store
