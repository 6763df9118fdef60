"""Schema of the token-exchange tables (migration 2); a plain constant so migrations.py can import it."""

from __future__ import annotations

__all__ = ["EXCHANGE_SCHEMA"]

EXCHANGE_SCHEMA = """
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    retired_at REAL,
    private_key BLOB NOT NULL
);

CREATE TABLE approvals (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    workload_id TEXT NOT NULL,
    target_id TEXT NOT NULL,
    policy_id TEXT NOT NULL,
    status TEXT NOT NULL,
    window_seconds INTEGER NOT NULL,
    requested_by TEXT,
    decided_by TEXT,
    created_at TEXT NOT NULL,
    decided_at TEXT
);
CREATE UNIQUE INDEX approvals_one_pending ON approvals(workload_id, target_id) WHERE status = 'pending';
CREATE INDEX approvals_pair ON approvals(workload_id, target_id, seq);
CREATE INDEX approvals_status ON approvals(status, seq);

CREATE TABLE proxies (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    workload_id TEXT NOT NULL,
    pod TEXT NOT NULL,
    pod_uid TEXT,
    version TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    UNIQUE (workload_id, pod)
);

CREATE TABLE observations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    workload_id TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    governed INTEGER NOT NULL,
    count INTEGER NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    UNIQUE (workload_id, host, port)
);
CREATE INDEX observations_host ON observations(host, port);
"""
