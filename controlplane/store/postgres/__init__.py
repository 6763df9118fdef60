"""The PostgreSQL store (asyncpg): several control plane replicas share one database.

Needs the `postgres` extra (asyncpg). Chosen by `--db postgresql://...` / `SESAME_DB`.
"""

from __future__ import annotations

from controlplane.store.postgres.db import Database
from controlplane.store.postgres.rate_limits import PostgresRateLimits
from controlplane.store.sql import SqlStore

__all__ = ["PostgresStore"]


class PostgresStore(SqlStore):
    """The shared store over one PostgreSQL database."""

    shared = True

    def __init__(self, dsn: str) -> None:
        super().__init__(Database(dsn))
        self.rate_limits = PostgresRateLimits(self.db)
