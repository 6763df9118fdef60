"""The storage interface the control plane codes against (SQLite or PostgreSQL).

A store groups repositories by domain: `store.registry`, `store.api_keys`, `store.audit`.
Add a repository for new tables the same way (a Protocol here, an implementation per backend).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from controlplane.pagination import Page

__all__ = [
    "ApiKey",
    "ApiKeyStore",
    "AuditHook",
    "AuditStore",
    "RegistryStore",
    "Store",
    "VersionConflict",
    "Versioned",
]

# Called inside a registry write's transaction (the store's open `Transaction`) with the record as
# stored (deleted: as it was), e.g. to append the change's audit row so both commit together.
AuditHook = Callable[[Any, dict[str, Any]], Awaitable[None]]


class VersionConflict(Exception):
    """The record's stored version is not the one the write was based on (`current`: stored now)."""

    def __init__(self, current: int) -> None:
        super().__init__(f"stored version is {current}")
        self.current = current


@dataclass(frozen=True)
class Versioned:
    """A record and its version (the HTTP API's ETag); every write increments the version."""

    record: dict[str, Any]
    version: int


@dataclass(frozen=True, kw_only=True)
class ApiKey:
    """A stored admin key: never the key itself, only its SHA-256."""

    id: str
    name: str
    role: str
    prefix: str
    key_hash: str
    created_at: str
    last_used_at: str | None = None

    def public(self) -> dict[str, Any]:
        """The listing shape of seed 004 plus role, in the API's snake_case (seed 004's `createdAt` and
        `lastUsedAt` are `created_at` and `last_used_at`; docs/api.md, Compatibility)."""
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "prefix": self.prefix,
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
        }


class RegistryStore(Protocol):
    """Workloads, clusters, targets, credential providers, policies: `kind` is the table name."""

    async def create(
        self,
        kind: str,
        fields: dict[str, Any],
        *,
        now: str,
        secret: bytes | None = None,
        id: str | None = None,
        audit: AuditHook | None = None,
    ) -> dict[str, Any]: ...
    async def get(self, kind: str, id: str) -> dict[str, Any] | None: ...
    async def get_versioned(self, kind: str, id: str) -> Versioned | None: ...
    async def get_secret(self, kind: str, id: str) -> bytes | None: ...
    async def list(
        self, kind: str, *, limit: int, after_seq: int | None = None, filters: dict[str, Any] | None = None
    ) -> Page: ...
    async def find(self, kind: str, **filters: Any) -> list[dict[str, Any]]: ...
    async def update(
        self,
        kind: str,
        id: str,
        changes: dict[str, Any],
        *,
        now: str,
        secret: bytes | None = None,
        version: int | None = None,
        audit: AuditHook | None = None,
    ) -> Versioned | None:
        """Raises `VersionConflict` when `version` is given and is not the stored one."""
        ...

    async def delete(self, kind: str, id: str, *, audit: AuditHook | None = None) -> bool: ...


class ApiKeyStore(Protocol):
    async def create(self, key: ApiKey) -> None: ...
    async def by_prefix(self, prefix: str) -> list[ApiKey]: ...
    async def get(self, id: str) -> ApiKey | None: ...
    async def list(self, *, limit: int, after_seq: int | None = None) -> Page: ...
    async def delete(self, id: str) -> bool: ...
    async def touch(self, id: str, ts: str) -> None: ...
    async def count_role(self, role: str) -> int: ...


class AuditStore(Protocol):
    async def append(
        self, rows: list[dict[str, Any]], *, link: Callable[[str, list[dict[str, Any]]], list[dict[str, Any]]]
    ) -> list[dict[str, Any]]:
        """Chain rows onto the stored head (`link(head, rows)` adds prev_hash/hash) and insert them,
        atomically and serialised with every other writer of the same database."""
        ...

    async def append_in(
        self,
        tx: Any,
        rows: list[dict[str, Any]],
        *,
        link: Callable[[str, list[dict[str, Any]]], list[dict[str, Any]]],
    ) -> list[dict[str, Any]]:
        """`append` inside the caller's open write transaction (commits or rolls back with it)."""
        ...

    async def head(self) -> str: ...
    async def anchor(self) -> str: ...
    async def list(
        self,
        *,
        filters: dict[str, Any],
        since: str | None,
        until: str | None,
        limit: int,
        before_seq: int | None = None,
    ) -> Page: ...
    async def export_end(
        self,
        *,
        filters: dict[str, Any],
        since: str | None,
        until: str | None,
        limit: int,
        after: tuple[str, int] | None = None,
    ) -> tuple[tuple[str, int] | None, bool]: ...
    def export(
        self,
        *,
        filters: dict[str, Any],
        since: str | None,
        until: str | None,
        limit: int,
        after: tuple[str, int] | None = None,
        through: tuple[str, int] | None = None,
    ) -> AsyncIterator[dict[str, Any]]: ...
    def chain(self) -> AsyncIterator[dict[str, Any]]: ...
    async def prune(self, *, before: str) -> int: ...


class Store(Protocol):
    registry: RegistryStore
    api_keys: ApiKeyStore
    audit: AuditStore

    async def ping(self) -> None:
        """Raise StoreError unless the database answers."""
        ...

    async def sealed_blobs(self) -> list[bytes]:
        """One sample sealed blob per table that holds any (for the start-up KEK check)."""
        ...

    async def close(self) -> None: ...
