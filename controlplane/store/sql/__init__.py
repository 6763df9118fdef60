"""What the SQLite and PostgreSQL stores share: portable SQL repositories and the migrations.

A backend supplies a `Database` (see `database.py`) and subclasses `SqlStore`.
"""

from __future__ import annotations

from controlplane.store.sql.database import Database, Transaction, UniqueViolation
from controlplane.store.sql.store import SqlStore

__all__ = ["Database", "SqlStore", "Transaction", "UniqueViolation"]
