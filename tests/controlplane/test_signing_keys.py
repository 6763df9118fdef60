"""Signing-key lifecycle (next → active → retired) on both real backends (`db_config`).

The clock is injected: publication delays pass by advancing it, nothing sleeps.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from controlplane.clock import FakeClock
from controlplane.envelope import Envelope
from controlplane.signing_keys import SigningKeys, StoredSigningKey
from controlplane.store import SqlStore, open_store
from controlplane.store.sql.database import UniqueViolation
from controlplane.store.sql.exchange import SqlExchange
from controlplane.store.sql.migrations import MIGRATIONS
from controlplane.store.sqlite.store import SqliteStore

TTL = 600


@pytest.fixture
async def stores(db_config: dict[str, Any]) -> AsyncIterator[list[SqlStore]]:
    """Two connections to one database, as two replicas have."""
    location = db_config.get("db_dsn") or db_config["db_path"]
    opened = [await open_store(location) for _ in range(2)]
    try:
        yield opened
    finally:
        for store in opened:
            await store.close()


def replica(store: SqlStore, clock: FakeClock, envelope: Envelope, delay: float = 0) -> SigningKeys:
    return SigningKeys(
        store=SqlExchange(store.db),
        envelope=envelope,
        clock=clock,
        max_token_ttl_seconds=TTL,
        publication_seconds=delay,
    )


async def rows(store: SqlStore) -> list[StoredSigningKey]:
    return await SqlExchange(store.db).list_signing_keys(retired_after=float("-inf"))


def kids(jwks: dict[str, Any]) -> list[str]:
    return [k["kid"] for k in jwks["keys"]]


async def test_replicas_creating_the_first_key_at_once_agree_on_one(stores) -> None:
    clock, envelope = FakeClock(), Envelope.from_keys(os.urandom(32))
    for _ in range(6):
        a, b = (replica(store, clock, envelope) for store in stores)
        first, second = await asyncio.gather(a.signer(), b.signer())
        assert first.kid == second.kid
        assert [(r.kid, r.state) for r in await rows(stores[0])] == [(first.kid, "active")]
        await stores[0].db.executemany("DELETE FROM signing_keys WHERE kid = ?", [(first.kid,)])


async def test_the_database_refuses_a_second_active_or_next_key(stores) -> None:
    clock, envelope = FakeClock(), Envelope.from_keys(os.urandom(32))
    keys = replica(stores[0], clock, envelope, delay=60)
    active = await keys.signer()
    pending, _ = await keys.rotate()
    for state in ("active", "next"):
        with pytest.raises(UniqueViolation):
            async with stores[1].db.write() as tx:
                await tx.execute(
                    "INSERT INTO signing_keys (kid, state, created_at, active_from, private_key) "
                    "VALUES (?, ?, 0, 0, ?)",
                    (f"dup-{state}", state, b"x"),
                )
    assert {r.kid: r.state for r in await rows(stores[0])} == {active.kid: "active", pending.kid: "next"}


async def test_a_rotated_key_is_published_everywhere_before_any_replica_signs_with_it(stores) -> None:
    clock, envelope = FakeClock(), Envelope.from_keys(os.urandom(32))
    a, b = (replica(store, clock, envelope, delay=60) for store in stores)
    old = await a.signer()
    new, retiring = await a.rotate()
    assert (new.state, new.active_from, retiring) == ("next", clock.time() + 60, [old.kid])
    assert (await a.rotate())[0].kid == new.kid  # a second rotation meanwhile is the same rotation
    assert kids(await b.jwks()) == [new.kid, old.kid]  # the other replica publishes it at once
    clock.advance(59.9)
    assert (await b.signer()).kid == old.kid  # and neither signs with it before its time
    assert (await a.signer()).kid == old.kid
    clock.advance(0.1)
    assert (await b.signer()).kid == new.kid  # whichever replica signs first promotes it
    assert (await a.signer()).kid == new.kid
    states = {r.kid: (r.state, r.retired_at) for r in await rows(stores[0])}
    assert states == {old.kid: ("retired", new.active_from), new.kid: ("active", None)}
    clock.advance(TTL - 0.1)  # the old key's last token (signed just before active_from) still lives
    assert kids(await a.jwks()) == [new.kid, old.kid]
    clock.advance(0.1)
    assert kids(await a.jwks()) == [new.kid]


async def test_without_a_delay_the_rotated_key_signs_at_once_everywhere(stores) -> None:
    clock, envelope = FakeClock(), Envelope.from_keys(os.urandom(32))
    a, b = (replica(store, clock, envelope) for store in stores)
    old = await b.signer()
    new, retiring = await a.rotate()
    assert (new.state, retiring) == ("active", [old.kid])
    assert (await b.signer()).kid == new.kid  # no replica keeps signing with the retired key
    assert kids(await b.jwks()) == [new.kid, old.kid]


async def test_replicas_rotating_at_once_leave_one_active_key(stores) -> None:
    clock, envelope = FakeClock(), Envelope.from_keys(os.urandom(32))
    a, b = (replica(store, clock, envelope) for store in stores)
    old = await a.signer()
    (first, _), (second, _) = await asyncio.gather(a.rotate(), b.rotate())
    states = [r.state for r in await rows(stores[0])]
    assert states.count("active") == 1 and states.count("next") == 0
    assert {first.kid, second.kid} <= {r.kid for r in await rows(stores[0])} - {old.kid}


async def test_migration_keeps_the_newest_unretired_key_as_the_one_active_key(tmp_path) -> None:
    """A database written before the lifecycle, with the duplicate active keys the race made."""
    store = SqliteStore(tmp_path / "old.db")
    await store.db.connect()
    try:
        async with store.db.write() as tx:
            await tx.execute(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at TEXT)"
            )
        for m in MIGRATIONS[:5]:
            await store.db.apply_migration(m.version, m.name, m.sql)
        await store.db.executemany(
            "INSERT INTO signing_keys (kid, created_at, retired_at, private_key) VALUES (?, ?, ?, ?)",
            [("retired", 100.0, 200.0, b"x"), ("dup-old", 300.0, None, b"x"), ("dup-new", 301.0, None, b"x")],
        )
        assert await store.migrate() == [m.version for m in MIGRATIONS[5:]]
        found = {r.kid: (r.state, r.active_from, r.retired_at) for r in await rows(store)}
        assert found == {
            "retired": ("retired", 100.0, 230.0),
            "dup-old": ("retired", 300.0, 331.0),
            "dup-new": ("active", 301.0, None),
        }
    finally:
        await store.close()
