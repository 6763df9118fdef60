"""Helpers for handlers: JSON responses, list pages, audit events tied to the request."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from controlplane.appkeys import AUDIT, CLOCK, CONFIG, PRINCIPAL, QUERY, REQUEST_ID
from controlplane.audit import ChangeAudit
from controlplane.clock import format_ts
from controlplane.errors import PayloadTooLarge
from controlplane.pagination import Page, decode_cursor

__all__ = [
    "actor_of",
    "audit_event",
    "change_audit",
    "cursor_seq",
    "json_response",
    "now_ts",
    "page_response",
    "read_body",
]


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=_dumps)


def actor_of(request: web.Request) -> str:
    """`api_key:<id>` for admin callers, `anonymous` otherwise."""
    principal = request.get(PRINCIPAL)
    return f"api_key:{principal.id}" if principal is not None else "anonymous"


def now_ts(request: web.Request) -> str:
    return format_ts(request.app[CLOCK].time())


def cursor_seq(request: web.Request) -> int | None:
    """The validated `cursor` query parameter as a sequence number (400 if malformed)."""
    return decode_cursor(request[QUERY].get("cursor"))


def page_response(page: Page, *, key: str = "data") -> web.Response:
    return json_response({key: page.rows, "next_cursor": page.next_cursor()})


async def audit_event(
    request: web.Request, *, type: str, outcome: str = "success", actor: str | None = None, **fields: Any
) -> dict[str, Any]:
    """Record an audit event for this request (actor and correlation id filled in); waits for commit."""
    return await request.app[AUDIT].record(
        type=type,
        actor=actor or actor_of(request),
        outcome=outcome,
        correlation_id=request.get(REQUEST_ID),
        **fields,
    )


def change_audit(
    request: web.Request, *, type: str, fields_of: Callable[[dict[str, Any]], dict[str, Any]]
) -> ChangeAudit:
    """An audit hook for a registry write made by this request: the event (actor and correlation id
    filled in, the rest from `fields_of(stored record)`) commits in the write's own transaction.
    Call `request.app[AUDIT].committed(hook)` once the write has returned."""
    actor, correlation_id = actor_of(request), request.get(REQUEST_ID)
    return request.app[AUDIT].hook(
        lambda record: {
            "type": type,
            "actor": actor,
            "outcome": "success",
            "correlation_id": correlation_id,
            **fields_of(record),
        }
    )


async def read_body(request: web.Request) -> bytes:
    """The request body; 413 when it exceeds the app's limit.

    A declared Content-Length over the limit is refused by `error_middleware` before any handler.
    """
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(
            f"request body larger than {request.app[CONFIG].max_body_bytes} bytes"
        ) from None
