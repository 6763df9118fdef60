"""Database locations: a SQLite file path or a `postgresql://` DSN (no driver imports here)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = ["is_postgres_dsn", "redact_dsn"]

_SCHEMES = ("postgres://", "postgresql://")


def is_postgres_dsn(text: str) -> bool:
    return text.startswith(_SCHEMES)


def redact_dsn(dsn: str) -> str:
    """The DSN without its password, for logs and error messages."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
