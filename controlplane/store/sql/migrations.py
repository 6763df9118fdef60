"""Versioned schema migrations shared by both backends, applied in order on start.

The DDL is written for SQLite; the PostgreSQL dialect (`store/postgres/dialect.py`) maps its few
type names. To add tables, APPEND a `Migration(<next version>, "<name>", SQL_TEXT)` to `MIGRATIONS`; never
edit an applied one. If your table holds envelope-sealed blobs, also append it to `SEALED_COLUMNS`
so start-up refuses to run without the KEK that can open them.
"""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.errors import StartupError
from controlplane.store.sql.exchange_schema import EXCHANGE_SCHEMA

__all__ = ["MIGRATIONS", "SEALED_COLUMNS", "Migration", "pending"]


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str
    # Run after `sql` on PostgreSQL only (already PostgreSQL DDL): what only shared databases need.
    postgres: str = ""


_REGISTRY_AND_AUDIT = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE api_keys (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    prefix TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_used_at TEXT
);
CREATE INDEX api_keys_prefix ON api_keys(prefix);

CREATE TABLE workloads (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL UNIQUE,
    cluster TEXT,
    namespace TEXT NOT NULL,
    service_account TEXT NOT NULL,
    status TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX workloads_identity ON workloads(coalesce(cluster, ''), namespace, service_account);

CREATE TABLE clusters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL UNIQUE,
    issuer TEXT NOT NULL UNIQUE,
    data TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE targets (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL UNIQUE,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    audience TEXT NOT NULL UNIQUE,
    data TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX targets_host ON targets(host, port);

CREATE TABLE credential_providers (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    secret BLOB,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE policies (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    workload_id TEXT,
    target_id TEXT,
    provider_id TEXT NOT NULL,
    effect TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX policies_scope
    ON policies(coalesce(workload_id, ''), coalesce(target_id, ''), provider_id);
CREATE INDEX policies_workload ON policies(workload_id);
CREATE INDEX policies_target ON policies(target_id);

CREATE TABLE audit_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    ts TEXT NOT NULL,
    type TEXT NOT NULL,
    actor TEXT NOT NULL,
    outcome TEXT NOT NULL,
    workload_id TEXT,
    target_service TEXT,
    audience TEXT,
    ttl_seconds INTEGER,
    reason TEXT,
    correlation_id TEXT,
    extra TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_workload ON audit_events(workload_id, seq);
CREATE INDEX audit_target ON audit_events(target_service, seq);
CREATE INDEX audit_type ON audit_events(type, seq);
CREATE INDEX audit_actor ON audit_events(actor, seq);
CREATE INDEX audit_correlation ON audit_events(correlation_id);
CREATE INDEX audit_ts ON audit_events(ts);
"""

# Exports walk (ts, seq); SQLite's ts index already ended in the rowid, PostgreSQL's did not.
_AUDIT_KEYSET = """
CREATE INDEX audit_ts_seq ON audit_events(ts, seq);
DROP INDEX audit_ts;
"""

# Every registry write is a compare-and-set on `version` (the HTTP API's ETag).
_REGISTRY_VERSIONS = "\n".join(
    f"ALTER TABLE {table} ADD COLUMN version INTEGER NOT NULL DEFAULT 1;"
    for table in ("workloads", "clusters", "targets", "credential_providers", "policies")
)

# Signing keys move next -> active -> retired; one active and at most one next key (controlplane/
# signing_keys.py). Before this, the newest unretired key signed and each replica re-read the set
# every 30 s: the newest unretired key becomes the active one, and every other key stays published
# 30 s longer than before, covering tokens a replica signed with it before it noticed.
_SIGNING_KEY_STATES = """
ALTER TABLE signing_keys ADD COLUMN state TEXT NOT NULL DEFAULT 'retired';
ALTER TABLE signing_keys ADD COLUMN active_from REAL;
UPDATE signing_keys SET active_from = created_at;
UPDATE signing_keys SET state = 'active' WHERE kid = (
    SELECT kid FROM signing_keys WHERE retired_at IS NULL ORDER BY created_at DESC, kid DESC LIMIT 1
);
UPDATE signing_keys SET retired_at = (SELECT max(created_at) FROM signing_keys)
    WHERE state = 'retired' AND retired_at IS NULL;
UPDATE signing_keys SET retired_at = retired_at + 30 WHERE state = 'retired';
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys(state) WHERE state = 'active';
CREATE UNIQUE INDEX signing_keys_one_next ON signing_keys(state) WHERE state = 'next';
"""

# Sliding-log rate-limit counters every replica shares (store/postgres/rate_limits.py); a single
# SQLite replica counts in memory. UNLOGGED: a crash or fail-over only forgives one minute.
_SHARED_RATE_LIMITS = """
CREATE UNLOGGED TABLE rate_limits (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    hits DOUBLE PRECISION[] NOT NULL,
    admitted BOOLEAN NOT NULL,
    PRIMARY KEY (scope, key)
);
"""

MIGRATIONS: list[Migration] = [
    Migration(1, "registry, api keys, audit", _REGISTRY_AND_AUDIT),
    Migration(2, "token exchange: signing keys, approvals, proxies, observations", EXCHANGE_SCHEMA),
    Migration(3, "audit export keyset index", _AUDIT_KEYSET),
    # Replicas bootstrapping the same key at once: the second insert fails instead of duplicating it.
    Migration(4, "api key hashes are unique", "CREATE UNIQUE INDEX api_keys_hash ON api_keys(key_hash);"),
    Migration(5, "registry record versions", _REGISTRY_VERSIONS),
    Migration(6, "signing key lifecycle: next, active, retired", _SIGNING_KEY_STATES),
    Migration(7, "rate limits shared by replicas", "", postgres=_SHARED_RATE_LIMITS),
    # Policies get an optional name (unique when set), so people and documents can refer to them.
    Migration(
        8,
        "policy names",
        "ALTER TABLE policies ADD COLUMN name TEXT;\nCREATE UNIQUE INDEX policies_name ON policies(name);",
    ),
    # Append Migration(9, ...) here.
]

# (table, column) pairs holding `Envelope.seal()` blobs; checked against the KEK at start.
SEALED_COLUMNS: list[tuple[str, str]] = [
    ("credential_providers", "secret"),
    ("signing_keys", "private_key"),
]


def pending(applied: int) -> list[Migration]:
    """Migrations newer than `applied`, in order; refuses a database from a newer release."""
    versions = [m.version for m in MIGRATIONS]
    if versions != sorted(set(versions)) or versions[0] != 1:
        raise StartupError(f"migration versions must be unique and ascending from 1: {versions}")
    if applied > versions[-1]:
        raise StartupError(
            f"database schema version {applied} is newer than this release ({versions[-1]}); upgrade sesame"
        )
    return [m for m in MIGRATIONS if m.version > applied]
