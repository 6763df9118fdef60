"""Admin API keys (either backend): only the SHA-256 of each key is stored, looked up by its prefix."""

from __future__ import annotations

from typing import Any

from controlplane.pagination import Page
from controlplane.store.base import ApiKey
from controlplane.store.sql.database import Database

__all__ = ["SqlApiKeys"]

_COLS = "id, name, role, prefix, key_hash, created_at, last_used_at"


class SqlApiKeys:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, key: ApiKey) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                f"INSERT INTO api_keys ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key.id, key.name, key.role, key.prefix, key.key_hash, key.created_at, key.last_used_at),
            )

    async def by_prefix(self, prefix: str) -> list[ApiKey]:
        rows = await self._db.fetchall(f"SELECT {_COLS} FROM api_keys WHERE prefix = ?", (prefix,))
        return [ApiKey(**r) for r in rows]

    async def get(self, id: str) -> ApiKey | None:
        row = await self._db.fetchone(f"SELECT {_COLS} FROM api_keys WHERE id = ?", (id,))
        return None if row is None else ApiKey(**row)

    async def list(self, *, limit: int, after_seq: int | None = None) -> Page:
        rows = await self._db.fetchall(
            f"SELECT seq, {_COLS} FROM api_keys WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq or 0, limit + 1),
        )
        return Page.from_rows(rows, limit, _public)

    async def delete(self, id: str) -> bool:
        async with self._db.write() as conn:
            cur = await conn.execute("DELETE FROM api_keys WHERE id = ?", (id,))
            return cur.rowcount > 0

    async def touch(self, id: str, ts: str) -> None:
        async with self._db.write() as conn:
            await conn.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (ts, id))

    async def count_role(self, role: str) -> int:
        row = await self._db.fetchone("SELECT count(*) AS n FROM api_keys WHERE role = ?", (role,))
        return row["n"] if row else 0


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return ApiKey(**{k: v for k, v in row.items() if k != "seq"}).public()
