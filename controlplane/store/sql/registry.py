"""Registry resources (workloads, clusters, targets, credential providers, policies), either backend.

Each resource is one table: the public record as JSON in `data`, plus the columns that are
unique, filtered on or indexed, derived from the record by its `Kind`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controlplane.errors import Conflict, InvalidRequest
from controlplane.ids import new_id
from controlplane.pagination import Page
from controlplane.store.sql.database import Database, UniqueViolation

__all__ = ["KINDS", "Kind", "SqlRegistry", "id_prefix"]

FIND_LIMIT = 1000


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
    ) -> dict[str, Any]:
        """Insert a record (id minted from the kind's prefix unless given); 409 on duplicates."""
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
        await self._write(kind, f"INSERT INTO {k.table} ({names}) VALUES ({marks})", list(cols.values()))
        return record

    async def get(self, kind: str, id: str) -> dict[str, Any] | None:
        k = KINDS[kind]
        row = await self._db.fetchone(
            f"SELECT id, data, created_at, updated_at FROM {k.table} WHERE id = ?", (id,)
        )
        return None if row is None else _record(row)

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
        self, kind: str, id: str, changes: dict[str, Any], *, now: str, secret: bytes | None = None
    ) -> dict[str, Any] | None:
        """Shallow-merge `changes` into the record (and replace the secret if given)."""
        k = KINDS[kind]
        current = await self.get(kind, id)
        if current is None:
            return None
        fields = {key: v for key, v in current.items() if key not in ("id", "created_at", "updated_at")}
        fields.update(changes)
        record = {**current, **changes, "updated_at": now}
        cols = {**k.columns(record), "data": json.dumps(fields), "updated_at": now}
        if secret is not None:
            cols["secret"] = secret
        assignments = ", ".join(f"{c} = ?" for c in cols)
        await self._write(kind, f"UPDATE {k.table} SET {assignments} WHERE id = ?", [*cols.values(), id])
        return record

    async def delete(self, kind: str, id: str) -> bool:
        async with self._db.write() as conn:
            cur = await conn.execute(f"DELETE FROM {KINDS[kind].table} WHERE id = ?", (id,))
        self._changed(kind)
        return cur.rowcount > 0

    async def _write(self, kind: str, sql: str, params: list[Any]) -> None:
        try:
            async with self._db.write() as conn:
                await conn.execute(sql, params)
        except UniqueViolation as exc:
            raise Conflict(_conflict_message(kind, exc)) from exc
        self._changed(kind)

    def _changed(self, kind: str) -> None:
        for listener in self.listeners:
            listener(kind)


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
    "policies": {"workload_id", "target_id", "provider_id", "effect"},
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
