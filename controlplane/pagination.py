"""Opaque cursors for `?limit=&cursor=` lists (seed 000): base64url of `{"s": <seq>}`.

Every cursor is checked on the way in: anything that does not decode to in-range values is
400 `invalid_cursor` (never a database error).

Rows are walked by their immutable insertion sequence, so a walk sees every row exactly once
even while rows are added or deleted.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controlplane.clock import format_ts, parse_ts
from controlplane.errors import InvalidRequest
from controlplane.validation import Int, Str

__all__ = [
    "CURSOR_FORMAT",
    "DEFAULT_LIMIT",
    "EXPORT_CURSOR_FORMAT",
    "LIST_QUERY",
    "MAX_LIMIT",
    "MAX_SEQ",
    "InvalidCursor",
    "Page",
    "decode_cursor",
    "decode_export_cursor",
    "encode_cursor",
    "encode_export_cursor",
]

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_SEQ = 2**63 - 1  # SQLite INTEGER and PostgreSQL bigint
MAX_CURSOR_CHARS = 200
# Custom OpenAPI formats: only a value this server handed out is a cursor (tests/controlplane/
# schemathesis_hooks.py teaches the fuzzer to make them).
CURSOR_FORMAT = "sesame-cursor"
EXPORT_CURSOR_FORMAT = "sesame-export-cursor"

# Query fields every list route accepts; merge into a route's own query Obj.
LIST_QUERY = {
    "limit": Int(min=1, max=MAX_LIMIT, default=DEFAULT_LIMIT, description="page size"),
    "cursor": Str(
        required=False,
        max_len=MAX_CURSOR_CHARS,
        description="opaque: the next_cursor of the previous page, passed back unchanged",
        openapi={"format": CURSOR_FORMAT},
    ),
}


@dataclass(frozen=True, kw_only=True)
class Page:
    """One page of rows plus the sequence number to continue after (None: last page)."""

    rows: list[dict[str, Any]]
    next_seq: int | None

    @classmethod
    def from_rows(
        cls, rows: list[dict[str, Any]], limit: int, shape: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> Page:
        """A page from the up to `limit + 1` rows a query fetched in walk order (each with its `seq`):
        an extra row only tells that more follow. `shape` turns a stored row into what lists show."""
        more = len(rows) > limit
        rows = rows[:limit]
        return cls(rows=[shape(r) for r in rows], next_seq=rows[-1]["seq"] if more else None)

    def next_cursor(self) -> str | None:
        return None if self.next_seq is None else encode_cursor(self.next_seq)


class InvalidCursor(InvalidRequest):
    """A cursor this server did not hand out (or one whose values are out of range)."""

    code = "invalid_cursor"

    def __init__(self) -> None:
        super().__init__("cursor is not valid: pass back a next_cursor unchanged", field="cursor")


def encode_cursor(seq: int) -> str:
    return _pack({"s": seq})


def encode_export_cursor(key: tuple[str, int]) -> str:
    """The cursor an audit export continues after: the (timestamp, seq) of its last row."""
    return _pack({"t": key[0], "s": key[1]})


def decode_cursor(cursor: str | None) -> int | None:
    """The sequence number inside a cursor; 400 invalid_cursor if malformed or out of range."""
    if cursor is None:
        return None
    return _seq(_unpack(cursor))


def decode_export_cursor(cursor: str | None) -> tuple[str, int] | None:
    """The (timestamp, seq) an export continues after; 400 invalid_cursor if malformed."""
    if cursor is None:
        return None
    data = _unpack(cursor)
    ts = data.get("t")
    try:
        if not isinstance(ts, str) or len(ts) > 40 or format_ts(parse_ts(ts)) != ts:
            raise InvalidCursor
    except (ValueError, OverflowError, OSError):
        raise InvalidCursor from None
    return ts, _seq(data)


def _pack(data: dict[str, Any]) -> str:
    """An opaque cursor carrying `data`: unpadded base64url of its JSON."""
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _unpack(cursor: str) -> dict[str, Any]:
    try:
        data = json.loads(base64.urlsafe_b64decode((cursor + "=" * (-len(cursor) % 4)).encode("ascii")))
    except (ValueError, UnicodeError, RecursionError):
        raise InvalidCursor from None
    if not isinstance(data, dict):
        raise InvalidCursor
    return data


def _seq(data: dict[str, Any]) -> int:
    seq = data.get("s")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SEQ:
        raise InvalidCursor
    return seq
