"""Token-exchange data (SQLite and PostgreSQL): lookups on the registry tables, signing keys, approvals,
proxy heartbeats and traffic observations (tables from `exchange_schema`)."""

from __future__ import annotations

import json
from typing import Any

from controlplane.errors import Conflict
from controlplane.ids import new_id
from controlplane.pagination import Page
from controlplane.signing_keys import StoredSigningKey
from controlplane.store.sql.database import Database, Transaction, UniqueViolation

__all__ = ["SqlExchange"]

_APPROVAL_COLS = (
    "id, workload_id, target_id, policy_id, status, window_seconds, requested_by, "
    "decided_by, created_at, decided_at"
)


def _record(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        **json.loads(row["data"]),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


class _KeySetChanged(Exception):
    """A signing-key write found the set changed since it was read: roll back, the caller re-reads."""


async def _retire(tx: Transaction, kid: str, *, at: float) -> None:
    cur = await tx.execute(
        "UPDATE signing_keys SET state = 'retired', retired_at = ? WHERE kid = ? AND state = 'active'",
        (at, kid),
    )
    if cur.rowcount != 1:
        raise _KeySetChanged


class SqlExchange:
    """Queries the token-exchange pipeline and the proxy-facing routes need."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # registry lookups --------------------------------------------------------------------------
    async def cluster_by_issuer(self, issuer: str) -> dict[str, Any] | None:
        row = await self._db.fetchone(
            "SELECT id, data, created_at, updated_at FROM clusters WHERE issuer = ?", (issuer,)
        )
        return None if row is None else _record(row)

    async def workload_for(
        self, *, cluster: str, namespace: str, service_account: str
    ) -> dict[str, Any] | None:
        """The workload registered for this identity: one naming the cluster wins over one that names none."""
        row = await self._db.fetchone(
            "SELECT id, data, created_at, updated_at FROM workloads "
            "WHERE namespace = ? AND service_account = ? AND (cluster = ? OR cluster IS NULL) "
            "ORDER BY cluster IS NULL LIMIT 1",
            (namespace, service_account, cluster),
        )
        return None if row is None else _record(row)

    async def target_by_audience(self, audience: str) -> dict[str, Any] | None:
        row = await self._db.fetchone(
            "SELECT id, data, created_at, updated_at FROM targets WHERE audience = ?", (audience,)
        )
        return None if row is None else _record(row)

    async def policies_for(self, *, workload_id: str, target_id: str | None = None) -> list[dict[str, Any]]:
        """Policies that can match the workload (and the target, or any target when None)."""
        sql = (
            "SELECT id, data, created_at, updated_at FROM policies "
            "WHERE (workload_id = ? OR workload_id IS NULL)"
        )
        params: list[Any] = [workload_id]
        if target_id is not None:
            sql += " AND (target_id = ? OR target_id IS NULL)"
            params.append(target_id)
        return [_record(r) for r in await self._db.fetchall(sql + " ORDER BY seq", params)]

    async def targets(self, ids: list[str] | None = None) -> list[dict[str, Any]]:
        """Targets by id (every target when `ids` is None), oldest first."""
        if ids is not None and not ids:
            return []
        sql = "SELECT id, data, created_at, updated_at FROM targets"
        params: list[Any] = []
        if ids is not None:
            sql += f" WHERE id IN ({', '.join('?' for _ in ids)})"
            params = list(ids)
        return [_record(r) for r in await self._db.fetchall(sql + " ORDER BY seq", params)]

    async def provider(self, provider_id: str) -> tuple[dict[str, Any], bytes | None] | None:
        """A credential provider's record and its sealed secret blob."""
        row = await self._db.fetchone(
            "SELECT id, data, secret, created_at, updated_at FROM credential_providers WHERE id = ?",
            (provider_id,),
        )
        return None if row is None else (_record(row), row["secret"])

    # signing keys (SigningKeyStore) ------------------------------------------------------------
    async def list_signing_keys(self, *, retired_after: float) -> list[StoredSigningKey]:
        rows = await self._db.fetchall(
            "SELECT kid, state, created_at, active_from, retired_at, private_key FROM signing_keys "
            "WHERE state <> 'retired' OR retired_at > ? ORDER BY created_at, kid",
            (retired_after,),
        )
        return [
            StoredSigningKey(
                kid=r["kid"],
                state=r["state"],
                created_at=r["created_at"],
                active_from=r["active_from"],
                retired_at=r["retired_at"],
                sealed_private_key=r["private_key"],
            )
            for r in rows
        ]

    async def add_signing_key(self, key: StoredSigningKey, *, retire: str | None) -> bool:
        try:
            async with self._db.write() as tx:
                if retire is not None:
                    await _retire(tx, retire, at=key.active_from)
                await tx.execute(
                    "INSERT INTO signing_keys (kid, state, created_at, active_from, retired_at, private_key) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        key.kid,
                        key.state,
                        key.created_at,
                        key.active_from,
                        key.retired_at,
                        key.sealed_private_key,
                    ),
                )
        except (_KeySetChanged, UniqueViolation):  # another replica created or rotated first
            return False
        return True

    async def promote_signing_key(self, kid: str, *, retire: str | None, at: float) -> bool:
        try:
            async with self._db.write() as tx:
                if retire is not None:
                    await _retire(tx, retire, at=at)
                cur = await tx.execute(
                    "UPDATE signing_keys SET state = 'active' WHERE kid = ? AND state = 'next'", (kid,)
                )
                if cur.rowcount != 1:
                    raise _KeySetChanged
        except (_KeySetChanged, UniqueViolation):  # another replica promoted first
            return False
        return True

    # approvals ---------------------------------------------------------------------------------
    async def approvals_for(
        self, *, workload_id: str, target_id: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        """Newest approvals for the workload (and target), newest first."""
        sql = f"SELECT {_APPROVAL_COLS} FROM approvals WHERE workload_id = ?"
        params: list[Any] = [workload_id]
        if target_id is not None:
            sql += " AND target_id = ?"
            params.append(target_id)
        return await self._db.fetchall(sql + " ORDER BY seq DESC LIMIT ?", [*params, limit])

    async def request_approval(
        self,
        *,
        workload_id: str,
        target_id: str,
        policy_id: str,
        window_seconds: int,
        requested_by: str | None,
        now: str,
    ) -> tuple[dict[str, Any], bool]:
        """The pending approval for (workload, target), created if none; returns (row, created)."""
        approval_id = new_id("apr")
        async with self._db.write() as conn:
            cur = await conn.execute(
                "INSERT INTO approvals (id, workload_id, target_id, policy_id, status, window_seconds, "
                "requested_by, created_at) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?) ON CONFLICT DO NOTHING",
                (approval_id, workload_id, target_id, policy_id, window_seconds, requested_by, now),
            )
            created = cur.rowcount > 0
        row = await self._db.fetchone(
            f"SELECT {_APPROVAL_COLS} FROM approvals WHERE workload_id = ? AND target_id = ? "
            "AND status = 'pending'",
            (workload_id, target_id),
        )
        assert row is not None
        return row, created

    async def get_approval(self, approval_id: str) -> dict[str, Any] | None:
        return await self._db.fetchone(f"SELECT {_APPROVAL_COLS} FROM approvals WHERE id = ?", (approval_id,))

    async def decide_approval(
        self, approval_id: str, *, status: str, decided_by: str, now: str, window_seconds: int | None
    ) -> dict[str, Any] | None:
        """Approve or deny a pending approval; None when it is missing, Conflict when already decided."""
        async with self._db.write() as conn:
            cur = await conn.execute(
                "UPDATE approvals SET status = ?, decided_by = ?, decided_at = ?, "
                "window_seconds = coalesce(?, window_seconds) WHERE id = ? AND status = 'pending'",
                (status, decided_by, now, window_seconds, approval_id),
            )
            changed = cur.rowcount > 0
        row = await self.get_approval(approval_id)
        if row is not None and not changed:
            raise Conflict(f"approval {approval_id} is already {row['status']}")
        return row

    async def list_approvals(self, *, limit: int, after_seq: int | None, status: str | None) -> Page:
        return await self._page(
            "approvals", f"seq, {_APPROVAL_COLS}", limit=limit, after_seq=after_seq, equals={"status": status}
        )

    # fleet and discovery -----------------------------------------------------------------------
    async def heartbeat(
        self, *, workload_id: str, pod: str, pod_uid: str | None, version: str, now: str
    ) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                "INSERT INTO proxies (workload_id, pod, pod_uid, version, first_seen, last_seen) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (workload_id, pod) DO UPDATE SET "
                "pod_uid = excluded.pod_uid, version = excluded.version, last_seen = excluded.last_seen",
                (workload_id, pod, pod_uid, version, now, now),
            )

    async def count_proxies(self, *, since: str) -> int:
        """Proxies whose last heartbeat is at or after `since` (RFC 3339, the stored format)."""
        row = await self._db.fetchone("SELECT count(*) AS n FROM proxies WHERE last_seen >= ?", (since,))
        return int(row["n"]) if row else 0

    async def list_proxies(self, *, limit: int, after_seq: int | None, workload_id: str | None) -> Page:
        return await self._page(
            "proxies",
            "seq, workload_id, pod, pod_uid, version, first_seen, last_seen",
            limit=limit,
            after_seq=after_seq,
            equals={"workload_id": workload_id},
        )

    async def observe(self, *, workload_id: str, observations: list[dict[str, Any]], now: str) -> None:
        rows = [
            (workload_id, o["host"], o["port"], int(o["governed"]), o["count"], now, now)
            for o in observations
        ]
        async with self._db.write() as conn:
            await conn.executemany(
                "INSERT INTO observations (workload_id, host, port, governed, count, first_seen, last_seen) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (workload_id, host, port) DO UPDATE SET "
                "count = observations.count + excluded.count, governed = excluded.governed, "
                "last_seen = excluded.last_seen",
                rows,
            )

    async def list_observations(
        self,
        *,
        limit: int,
        after_seq: int | None,
        host: str | None,
        workload_id: str | None,
        governed: bool | None,
    ) -> Page:
        page = await self._page(
            "observations",
            "seq, workload_id, host, port, governed, count, first_seen, last_seen",
            limit=limit,
            after_seq=after_seq,
            equals={
                "host": host,
                "workload_id": workload_id,
                "governed": None if governed is None else int(governed),
            },
        )
        for row in page.rows:
            row["governed"] = bool(row["governed"])
        return page

    async def _page(
        self, table: str, cols: str, *, limit: int, after_seq: int | None, equals: dict[str, Any]
    ) -> Page:
        """One page in `seq` order after `after_seq`, filtered by the non-None `equals` columns."""
        where = [f"{col} = ?" for col, value in equals.items() if value is not None]
        params: list[Any] = [value for value in equals.values() if value is not None]
        if after_seq is not None:
            where.append("seq > ?")
            params.append(after_seq)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._db.fetchall(
            f"SELECT {cols} FROM {table} {clause} ORDER BY seq LIMIT ?", [*params, limit + 1]
        )
        return Page.from_rows(rows, limit, lambda r: {k: v for k, v in r.items() if k != "seq"})
