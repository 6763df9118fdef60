"""What the shared repositories need from a database backend (SQLite or PostgreSQL).

Repositories write portable SQL with `?` placeholders; each backend's `Database` maps it to its
driver (the PostgreSQL dialect lives in `store/postgres/dialect.py`) and translates driver errors:
a broken unique index becomes `UniqueViolation`, anything else `StoreError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar, runtime_checkable

__all__ = [
    "AUDIT_LOCK",
    "Database",
    "InThreadWrites",
    "Result",
    "SyncTransaction",
    "Transaction",
    "UniqueViolation",
]

T = TypeVar("T")

# Names of the cross-replica locks a transaction can take (`Transaction.lock`).
AUDIT_LOCK = "sesame.audit"


class UniqueViolation(Exception):
    """A write broke a unique index: `index` names it when known, `columns` lists its columns."""

    def __init__(self, *, index: str | None, columns: tuple[str, ...]) -> None:
        super().__init__(index or ", ".join(columns))
        self.index = index
        self.columns = columns


class Result(Protocol):
    rowcount: int


class Transaction(Protocol):
    """One open write transaction; committed when its `write()` block exits cleanly."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> Result: ...
    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...
    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None: ...
    async def lock(self, name: str) -> None:
        """Serialise with every other transaction (in any replica) that takes the same lock."""
        ...


class SyncTransaction(Protocol):
    """One open write transaction driven by plain (blocking) calls on the database's own thread."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result: ...
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...
    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None: ...


@runtime_checkable
class InThreadWrites(Protocol):
    """A backend that can run a whole transaction in one hop to its connection's thread (SQLite).

    Hot paths (the audit writer's batches) use it instead of one `await` per statement.
    """

    async def transact(self, work: Callable[[SyncTransaction], T]) -> T: ...


class Database(Protocol):
    async def connect(self) -> None: ...
    async def close(self) -> None: ...
    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None: ...
    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...
    def write(self) -> AbstractAsyncContextManager[Transaction]: ...
    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...
    def migrating(self) -> AbstractAsyncContextManager[None]:
        """Held while migrations run: one replica migrates, the others wait and then see it done."""
        ...

    async def apply_migration(self, version: int, name: str, sql: str) -> None:
        """Run one migration (SQLite-flavoured DDL) and record its version, in one transaction."""
        ...
