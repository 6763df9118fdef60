"""Rate-limit counters every replica shares (`controlplane.ratelimit.SharedRateLimiter`), PostgreSQL only.

One row per (limiter, key) holds the timestamps of the requests admitted in the current window
(at most `limit` of them). One `INSERT … ON CONFLICT DO UPDATE` drops the timestamps that left the
window and appends `now` if fewer than `limit` remain: PostgreSQL locks the row for the statement,
so concurrent requests on any replica are counted one after the other and none is lost. The table
is UNLOGGED (no WAL): counters reset after a crash or a fail-over, which only forgives a minute.
"""

from __future__ import annotations

from controlplane.store.sql.database import Database

__all__ = ["PostgresRateLimits"]

_IN_WINDOW = "(SELECT count(*) FROM unnest(r.hits) h WHERE h > $3 - $4)"
_HIT = f"""
INSERT INTO rate_limits AS r (scope, key, hits, admitted) VALUES ($1, $2, ARRAY[$3::float8], true)
ON CONFLICT (scope, key) DO UPDATE SET
    admitted = {_IN_WINDOW} < $5,
    hits = CASE WHEN {_IN_WINDOW} < $5
        THEN ARRAY(SELECT h FROM unnest(r.hits) h WHERE h > $3 - $4 ORDER BY h) || $3::float8
        ELSE r.hits END
RETURNING admitted, (SELECT min(h) FROM unnest(r.hits) h WHERE h > $3 - $4) AS oldest
"""


class PostgresRateLimits:
    """Implements `controlplane.ratelimit.RateCounter`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def hit(self, scope: str, key: str, *, now: float, window: float, limit: int) -> float | None:
        row = await self._db.fetchone(_HIT, (scope, key, now, window, limit))
        assert row is not None
        return None if row["admitted"] else row["oldest"]

    async def forget(self, scope: str, key: str) -> None:
        async with self._db.write() as tx:
            await tx.execute("DELETE FROM rate_limits WHERE scope = ? AND key = ?", (scope, key))
