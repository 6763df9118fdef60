"""The SQLite store (aiosqlite, WAL): the embedded default backend."""

from __future__ import annotations

from pathlib import Path

from controlplane.store.sql import SqlStore
from controlplane.store.sqlite.db import Database

__all__ = ["SqliteStore"]


class SqliteStore(SqlStore):
    """The shared store over one SQLite file."""

    def __init__(self, path: Path, *, synchronous: str = "full") -> None:
        super().__init__(Database(path, synchronous=synchronous))
