"""Opaque cursors for `?limit=&cursor=` lists (seed 000): base64url of `{"s": <seq>}`.

Rows are walked by their immutable insertion sequence, so a walk sees every row exactly once
even while rows are added or deleted.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controlplane.errors import InvalidRequest
from controlplane.validation import Int, Str

__all__ = [
    "DEFAULT_LIMIT",
    "LIST_QUERY",
    "MAX_LIMIT",
    "Page",
    "decode_cursor",
    "encode_cursor",
    "pack_cursor",
    "unpack_cursor",
]

DEFAULT_LIMIT = 20
MAX_LIMIT = 100

# Query fields every list route accepts; merge into a route's own query Obj.
LIST_QUERY = {
    "limit": Int(min=1, max=MAX_LIMIT, default=DEFAULT_LIMIT, description="page size"),
    "cursor": Str(required=False, max_len=200, description="opaque next_cursor of the previous page"),
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


def encode_cursor(seq: int) -> str:
    return pack_cursor({"s": seq})


def pack_cursor(data: dict[str, Any]) -> str:
    """An opaque cursor carrying `data`: unpadded base64url of its JSON."""
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def unpack_cursor(cursor: str) -> Any:
    """The JSON inside a `pack_cursor` cursor (ValueError or UnicodeError if malformed)."""
    return json.loads(base64.urlsafe_b64decode((cursor + "=" * (-len(cursor) % 4)).encode("ascii")))


def decode_cursor(cursor: str | None) -> int | None:
    """The sequence number inside a cursor; 400 invalid_request (field `cursor`) if malformed."""
    if cursor is None:
        return None
    try:
        seq = unpack_cursor(cursor)["s"]
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise ValueError
        return seq
    except (ValueError, KeyError, TypeError, UnicodeError):
        raise InvalidRequest("cursor is not valid", field="cursor") from None
