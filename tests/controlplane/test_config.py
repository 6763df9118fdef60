"""Config is built once from flags over SESAME_* env over defaults, and validated."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from controlplane.config import DEFAULT_RATE_LIMIT_PER_MINUTE, Config
from controlplane.errors import StartupError

KEY = "ses_" + "a" * 40


@pytest.mark.parametrize(
    ("flags", "env", "expected"),
    [
        (
            {},
            {},
            {
                "db_path": Path("sesame.db"),
                "listen_host": "127.0.0.1",
                "listen_port": 8080,
                "rate_limit_per_minute": DEFAULT_RATE_LIMIT_PER_MINUTE,
                "kek": None,
            },
        ),
        (
            {},
            {"SESAME_DB": "/d/x.db", "SESAME_LISTEN": "0.0.0.0:9443", "SESAME_RATE_LIMIT": "5"},
            {
                "db_path": Path("/d/x.db"),
                "listen_host": "0.0.0.0",
                "listen_port": 9443,
                "rate_limit_per_minute": 5,
            },
        ),
        (
            {"db": "/flag.db", "listen": "[::1]:0"},
            {"SESAME_DB": "/env.db"},
            {"db_path": Path("/flag.db"), "listen_host": "::1", "listen_port": 0},
        ),
        ({}, {"SESAME_BOOTSTRAP_API_KEY": KEY}, {"bootstrap_api_key": KEY}),
        (
            {},
            {
                "SESAME_KEK": base64.b64encode(b"k" * 32).decode(),
                "SESAME_KEK_PREVIOUS": base64.b64encode(b"p" * 32).decode(),
            },
            {"kek": b"k" * 32, "kek_previous": (b"p" * 32,)},
        ),
    ],
)
def test_build(flags, env, expected):
    config = Config.build(flags, env)
    for name, value in expected.items():
        assert getattr(config, name) == value


@pytest.mark.parametrize(
    "env",
    [
        {"SESAME_LISTEN": "nope"},
        {"SESAME_LISTEN": "h:99999"},
        {"SESAME_RATE_LIMIT": "many"},
        {"SESAME_RATE_LIMIT": "0"},
        {"SESAME_BOOTSTRAP_API_KEY": "ses_short"},
        {"SESAME_TLS_CERT": "/c.pem"},
    ],
)
def test_invalid_settings_are_startup_errors(env):
    with pytest.raises(StartupError):
        Config.build({}, env)


def test_secrets_are_not_in_repr():
    config = Config.build(
        {}, {"SESAME_BOOTSTRAP_API_KEY": KEY, "SESAME_KEK": base64.b64encode(b"k" * 32).decode()}
    )
    assert KEY not in repr(config) and "kek=" not in repr(config)


@pytest.mark.parametrize(("mode", "pragma"), [("full", 2), ("normal", 1)])
async def test_sqlite_synchronous_mode_reaches_the_database(tmp_path: Path, mode: str, pragma: int) -> None:
    from controlplane.store import open_store

    config = Config.build({"db": str(tmp_path / "cp.db")}, {"SESAME_SQLITE_SYNCHRONOUS": mode})
    store = await open_store(config.db_location, sqlite_synchronous=config.sqlite_synchronous)
    try:
        row = await store.db.fetchone("PRAGMA synchronous")
        assert row is not None and next(iter(row.values())) == pragma
    finally:
        await store.close()


def test_unknown_sqlite_synchronous_mode_refuses_to_start() -> None:
    with pytest.raises(StartupError, match="full or normal"):
        Config.build({}, {"SESAME_SQLITE_SYNCHRONOUS": "off"})
