"""Registry resources (workloads, clusters, targets, credential providers, policies), either backend.

Each resource is one table: the public record as JSON in `data`, plus the columns that are
unique, filtered on or indexed, derived from the record by its `Kind`, and a `version` that every
write increments. Writes are compare-and-set on that version inside one transaction, so two
replicas patching one record cannot both win with a stale read; an optional `AuditHook` writes the
change's audit row in the same transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controlplane.errors import Conflict, InvalidRequest
from controlplane.ids import new_id
from controlplane.pagination import Page
from controlplane.store.base import AuditHook, VersionConflict, Versioned
from controlplane.store.sql.database import Database, UniqueViolation

__all__ = ["KINDS", "AuditHook", "Kind", "SqlRegistry", "VersionConflict", "Versioned", "id_prefix"]

FIND_LIMIT = 1000
# Lost compare-and-set races `update(version=None)` retries before giving up with VersionConflict.
UPDATE_ATTEMPTS = 5


@dataclass(frozen=True)
class Kind:
    table: str
    id_prefix: str
    columns: Callable[[dict[str, Any]], dict[str, Any]]
    has_secret: bool = False


def _workload_cols(r: dict[str, Any]) -> dict[str, Any]:
    att = r["attestation"]
    return {
        "name": r["name"],
        "cluster": att.get("cluster"),
        "namespace": att["namespace"],
        "service_account": att["service_account"],
        "status": r["status"],
    }


KINDS: dict[str, Kind] = {
    "workloads": Kind("workloads", "wl", _workload_cols),
    "clusters": Kind("clusters", "cl", lambda r: {"name": r["name"], "issuer": r["issuer"]}),
    "targets": Kind(
        "targets",
        "tg",
        lambda r: {"name": r["name"], "host": r["host"], "port": r["port"], "audience": r["audience"]},
    ),
    "credential_providers": Kind(
        "credential_providers", "cp", lambda r: {"name": r["name"], "type": r["type"]}, has_secret=True
    ),
    "policies": Kind(
        "policies",
        "pol",
        lambda r: {
            "name": r.get("name"),
            "workload_id": r.get("workload_id"),
            "target_id": r.get("target_id"),
            "provider_id": r["provider_id"],
            "effect": r["effect"],
        },
    ),
}


def id_prefix(kind: str) -> str:
    return KINDS[kind].id_prefix


class SqlRegistry:
    """CRUD over the registry tables; records are plain dicts with `id`, `created_at`, `updated_at`."""

    def __init__(self, db: Database) -> None:
        self._db = db
        # Called with the kind after every committed create/update/delete (in-process caches drop it).
        self.listeners: list[Callable[[str], None]] = []

    async def create(
        self,
        kind: str,
        fields: dict[str, Any],
        *,
        now: str,
        secret: bytes | None = None,
        id: str | None = None,
        audit: AuditHook | None = None,
    ) -> dict[str, Any]:
        """Insert a record at version 1 (id minted from the kind's prefix unless given); 409 on duplicates."""
        k = KINDS[kind]
        record = {"id": id or new_id(k.id_prefix), **fields, "created_at": now, "updated_at": now}
        cols = {
            "id": record["id"],
            **k.columns(record),
            "data": json.dumps(fields),
            "created_at": now,
            "updated_at": now,
        }
        if k.has_secret:
            cols["secret"] = secret
        names = ", ".join(cols)
        marks = ", ".join("?" for _ in cols)
        try:
            async with self._db.write() as tx:
                await tx.execute(f"INSERT INTO {k.table} ({names}) VALUES ({marks})", list(cols.values()))
                if audit is not None:
                    await audit(tx, record)
        except UniqueViolation as exc:
            raise Conflict(_conflict_message(kind, exc)) from exc
        self._changed(kind)
        return record

    async def get(self, kind: str, id: str) -> dict[str, Any] | None:
        found = await self.get_versioned(kind, id)
        return None if found is None else found.record

    async def get_versioned(self, kind: str, id: str) -> Versioned | None:
        row = await self._db.fetchone(f"SELECT {_RECORD_COLS} FROM {KINDS[kind].table} WHERE id = ?", (id,))
        return None if row is None else Versioned(_record(row), row["version"])

    async def get_secret(self, kind: str, id: str) -> bytes | None:
        """The sealed secret blob of a resource (credential providers), or None."""
        row = await self._db.fetchone(f"SELECT secret FROM {KINDS[kind].table} WHERE id = ?", (id,))
        return None if row is None else row["secret"]

    async def list(
        self, kind: str, *, limit: int, after_seq: int | None = None, filters: dict[str, Any] | None = None
    ) -> Page:
        k = KINDS[kind]
        where, params = _where(kind, filters or {})
        if after_seq is not None:
            where.append("seq > ?")
            params.append(after_seq)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._db.fetchall(
            f"SELECT seq, id, data, created_at, updated_at FROM {k.table} {clause} ORDER BY seq LIMIT ?",
            [*params, limit + 1],
        )
        return Page.from_rows(rows, limit, _record)

    async def find(self, kind: str, **filters: Any) -> list[dict[str, Any]]:
        """Records whose indexed columns equal `filters` (None matches NULL), oldest first."""
        k = KINDS[kind]
        where, params = _where(kind, filters)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._db.fetchall(
            f"SELECT id, data, created_at, updated_at FROM {k.table} {clause} ORDER BY seq LIMIT ?",
            [*params, FIND_LIMIT],
        )
        return [_record(r) for r in rows]

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
        """Shallow-merge `changes` into the record (and replace the secret if given); None if missing.

        With `version`, the write applies only to that version (else VersionConflict); without,
        the merge is based on the version read in the same transaction and retried when another
        writer wins the race in between (PostgreSQL, READ COMMITTED).
        """
        for _ in range(UPDATE_ATTEMPTS):
            try:
                return await self._update(kind, id, changes, now, secret, version, audit)
            except VersionConflict:
                if version is not None:
                    raise
        found = await self.get_versioned(kind, id)
        raise VersionConflict(found.version if found is not None else 0)

    async def _update(
        self,
        kind: str,
        id: str,
        changes: dict[str, Any],
        now: str,
        secret: bytes | None,
        version: int | None,
        audit: AuditHook | None,
    ) -> Versioned | None:
        k = KINDS[kind]
        try:
            async with self._db.write() as tx:
                row = await tx.fetchone(f"SELECT {_RECORD_COLS} FROM {k.table} WHERE id = ?", (id,))
                if row is None:
                    return None
                if version is not None and row["version"] != version:
                    raise VersionConflict(row["version"])
                current = _record(row)
                fields = {key: v for key, v in current.items() if key not in _META}
                fields.update(changes)
                record = {**current, **changes, "updated_at": now}
                cols = {**k.columns(record), "data": json.dumps(fields), "updated_at": now}
                if secret is not None:
                    cols["secret"] = secret
                assignments = ", ".join(f"{c} = ?" for c in cols)
                # Compare-and-set: 0 rows when another transaction changed the row since our read.
                cur = await tx.execute(
                    f"UPDATE {k.table} SET {assignments}, version = version + 1 WHERE id = ? AND version = ?",
                    [*cols.values(), id, row["version"]],
                )
                if cur.rowcount != 1:
                    raise VersionConflict(row["version"] + 1)
                if audit is not None:
                    await audit(tx, record)
        except UniqueViolation as exc:
            raise Conflict(_conflict_message(kind, exc)) from exc
        self._changed(kind)
        return Versioned(record, row["version"] + 1)

    async def delete(self, kind: str, id: str, *, audit: AuditHook | None = None) -> bool:
        """Delete the record; `audit` sees it as it was when deleted."""
        async with self._db.write() as tx:
            row = await tx.fetchone(
                f"DELETE FROM {KINDS[kind].table} WHERE id = ? RETURNING {_RECORD_COLS}", (id,)
            )
            if row is not None and audit is not None:
                await audit(tx, _record(row))
        self._changed(kind)
        return row is not None

    def _changed(self, kind: str) -> None:
        for listener in self.listeners:
            listener(kind)


_RECORD_COLS = "id, data, created_at, updated_at, version"
_META = ("id", "created_at", "updated_at")


def _record(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        **json.loads(row["data"]),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _where(kind: str, filters: dict[str, Any]) -> tuple[list[str], list[Any]]:
    allowed = _COLUMN_NAMES[kind]
    where: list[str] = []
    params: list[Any] = []
    for col, value in filters.items():
        if col not in allowed:
            raise InvalidRequest(f"cannot filter {kind} by {col}", field=col)
        if value is None:
            where.append(f"{col} IS NULL")
        else:
            where.append(f"{col} = ?")
            params.append(value)
    return where, params


_COLUMN_NAMES: dict[str, set[str]] = {
    "workloads": {"name", "cluster", "namespace", "service_account", "status"},
    "clusters": {"name", "issuer"},
    "targets": {"name", "host", "port", "audience"},
    "credential_providers": {"name", "type"},
    "policies": {"name", "workload_id", "target_id", "provider_id", "effect"},
}


_SINGULAR = {
    "workloads": "workload",
    "clusters": "cluster",
    "targets": "target",
    "credential_providers": "credential provider",
    "policies": "policy",
}


_INDEX_MEANING = {
    "workloads_identity": "attestation (cluster, namespace, service_account)",
    "policies_scope": "scope (workload_id, target_id, provider_id)",
}


def _conflict_message(kind: str, exc: UniqueViolation) -> str:
    what = _INDEX_MEANING.get(exc.index or "") or ", ".join(exc.columns) or str(exc)
    return f"a {_SINGULAR[kind]} with the same {what} already exists"
