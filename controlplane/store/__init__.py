"""Storage: one `Store` interface, backends under `store/<backend>/`.

Only SQLite exists today (`SqliteStore`); a PostgreSQL backend would implement the same
Protocols in `store/postgres/` and be chosen by `open_store`.
"""

from __future__ import annotations

from pathlib import Path

from controlplane.store.base import ApiKey, ApiKeyStore, AuditStore, RegistryStore, Store
from controlplane.store.sqlite import SqliteStore

__all__ = ["ApiKey", "ApiKeyStore", "AuditStore", "RegistryStore", "SqliteStore", "Store", "open_store"]


async def open_store(path: Path) -> SqliteStore:
    """Open (and migrate) the store at `path`."""
    return await SqliteStore.open(path)
