"""/v1/audit: filtered pages (newest first), export (json|csv stream), prune, verify."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from aiohttp import web

from controlplane.api_schemas import TIMESTAMP, component, nullable, page_of
from controlplane.appkeys import BODY, CLOCK, CONFIG, METRICS, QUERY, STORE
from controlplane.audit import verify_chain
from controlplane.clock import format_ts, parse_ts
from controlplane.config import DEFAULT_AUDIT_EXPORT_MAX_ROWS
from controlplane.errors import InvalidRequest
from controlplane.http import audit_event, cursor_seq, json_response, page_response
from controlplane.pagination import (
    EXPORT_CURSOR_FORMAT,
    LIST_QUERY,
    MAX_CURSOR_CHARS,
    decode_export_cursor,
    encode_export_cursor,
)
from controlplane.permissions import AUDIT_PRUNE, AUDIT_READ
from controlplane.routes import Route
from controlplane.store.sql.audit import AUDIT_FIELDS
from controlplane.validation import Int, Obj, Str

__all__ = ["EXPORT_MAX_ROWS", "NEXT_CURSOR_HEADER", "ROUTES", "csv_cell"]

EXPORT_MAX_ROWS = DEFAULT_AUDIT_EXPORT_MAX_ROWS  # API ceiling; Config.audit_export_max_rows may lower it
NEXT_CURSOR_HEADER = "X-Next-Cursor"  # set on an export cut short by `limit`; pass back as `cursor`
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
EXPORT_COLUMNS = tuple("timestamp" if f == "ts" else f for f in AUDIT_FIELDS)  # as /v1/audit names them

_DATE_TIME = {"format": "date-time"}
_FILTERS = {
    "workload_id": Str(required=False, max_len=100),
    "target": Str(required=False, max_len=200, description="target_service"),
    "type": Str(required=False, max_len=100),
    "actor": Str(required=False, max_len=200),
    "correlation_id": Str(required=False, max_len=128),
    "since": Str(required=False, max_len=40, description="RFC 3339, inclusive", openapi=_DATE_TIME),
    "until": Str(required=False, max_len=40, description="RFC 3339, exclusive", openapi=_DATE_TIME),
}
AUDIT_QUERY = Obj({**LIST_QUERY, **_FILTERS})
EXPORT_QUERY = Obj(
    {
        **_FILTERS,
        "format": Str(choices=("json", "csv"), default="json"),
        "limit": Int(
            min=1,
            max=EXPORT_MAX_ROWS,
            required=False,
            description="rows to send (default and cap: the server's export cap, 50,000 unless lowered)",
        ),
        "cursor": Str(
            required=False,
            max_len=MAX_CURSOR_CHARS,
            description=f"the {NEXT_CURSOR_HEADER} of the previous export",
            openapi={"format": EXPORT_CURSOR_FORMAT},
        ),
    }
)
PRUNE_IN = Obj({"days": Int(min=1, max=36500, description="delete events older than this many days")})


def _filters(query: dict[str, Any]) -> tuple[dict[str, Any], str | None, str | None]:
    filters = {
        "workload_id": query.get("workload_id"),
        "target_service": query.get("target"),
        "type": query.get("type"),
        "actor": query.get("actor"),
        "correlation_id": query.get("correlation_id"),
    }
    return filters, _ts(query, "since"), _ts(query, "until")


def _ts(query: dict[str, Any], name: str) -> str | None:
    if query.get(name) is None:
        return None
    try:
        return format_ts(parse_ts(query[name]))
    except ValueError:
        raise InvalidRequest(f"{name} must be an RFC 3339 timestamp", field=name) from None


async def list_audit(request: web.Request) -> web.Response:
    filters, since, until = _filters(request[QUERY])
    page = await request.app[STORE].audit.list(
        filters=filters,
        since=since,
        until=until,
        limit=request[QUERY]["limit"],
        before_seq=cursor_seq(request),
    )
    return page_response(page, key="events")


def csv_cell(value: Any) -> Any:
    """OWASP CSV injection: a text cell a spreadsheet would read as a formula starts with `'`."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


async def export_audit(request: web.Request) -> web.StreamResponse:
    """Stream up to `limit` events in (timestamp, seq) order, each exactly once.

    When more remain, the `X-Next-Cursor` header names where the next export (`cursor=`) goes on.
    """
    query = request[QUERY]
    filters, since, until = _filters(query)
    after = decode_export_cursor(query.get("cursor"))
    fmt = query["format"]
    audit = request.app[STORE].audit
    cap = request.app[CONFIG].audit_export_max_rows
    limit = min(query.get("limit") or cap, cap)
    window = {"filters": filters, "since": since, "until": until, "limit": limit, "after": after}
    through, more = await audit.export_end(**window)
    headers = {
        "Content-Type": "text/csv; charset=utf-8" if fmt == "csv" else "application/json",
        "Content-Disposition": f'attachment; filename="sesame-audit.{fmt}"',
    }
    if more and through is not None:
        headers[NEXT_CURSOR_HEADER] = encode_export_cursor(through)
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    rows = audit.export(**window, through=through)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(EXPORT_COLUMNS)
        async for event in rows:
            cells = (json.dumps(event[c]) if c == "extra" else event[c] for c in EXPORT_COLUMNS)
            writer.writerow([csv_cell(cell) for cell in cells])
            if buf.tell() > 64 * 1024:
                await response.write(buf.getvalue().encode())
                buf.seek(0)
                buf.truncate()
        await response.write(buf.getvalue().encode())
    else:
        sep = b"["
        chunk: list[bytes] = []
        async for event in rows:
            chunk.append(sep + json.dumps(event, separators=(",", ":")).encode())
            sep = b","
            if len(chunk) >= 500:
                await response.write(b"".join(chunk))
                chunk.clear()
        chunk.append(b"[]" if sep == b"[" else b"]")
        await response.write(b"".join(chunk))
    await response.write_eof()
    return response


async def prune_audit(request: web.Request) -> web.Response:
    days = request[BODY]["days"]
    before = format_ts(request.app[CLOCK].time() - days * 86400)
    deleted = await request.app[STORE].audit.prune(before=before)
    await audit_event(
        request, type="audit.pruned", extra={"days": days, "before": before, "deleted": deleted}
    )
    return json_response({"deleted": deleted, "before": before})


async def verify_audit(request: web.Request) -> web.Response:
    result = await verify_chain(request.app[STORE].audit)
    request.app[METRICS].audit_verified(result["ok"], request.app[CLOCK].time())
    return json_response(result)


_ERROR = {
    "description": "error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_AUDIT_EVENT = component(
    "AuditEvent",
    {
        "type": "object",
        "required": ["id", "timestamp", "type", "actor", "outcome", "extra"],
        "properties": {
            "id": {"type": "string"},
            "timestamp": TIMESTAMP,
            "type": {"type": "string", "description": "e.g. token.issued, workload.created"},
            "actor": {"type": "string"},
            "outcome": {"type": "string", "description": "success, denied, failure, skipped"},
            "workload_id": nullable({"type": "string"}),
            "target_service": nullable({"type": "string"}),
            "audience": nullable({"type": "string"}),
            "ttl_seconds": nullable({"type": "integer"}),
            "reason": nullable({"type": "string"}),
            "correlation_id": nullable({"type": "string", "description": "the request's X-Request-Id"}),
            "extra": {"type": "object"},
        },
    },
)
_AUDIT_PAGE = page_of("AuditEvent", key="events")

_EXPORT_RESPONSES = {
    "200": {
        "description": f"the events, oldest first (`format=json`: an array; `csv`: a header row); "
        f"`{NEXT_CURSOR_HEADER}` when more remain",
        "headers": {NEXT_CURSOR_HEADER: {"schema": {"type": "string"}, "required": False}},
        "content": {
            "application/json": {"schema": {"type": "array", "items": _AUDIT_EVENT}},
            "text/csv": {"schema": {"type": "string"}},
        },
    },
    **{code: _ERROR for code in ("400", "401", "403", "429", "default")},
}

ROUTES = [
    Route(
        "GET",
        "/v1/audit",
        list_audit,
        AUDIT_READ,
        "List audit events, newest first",
        query=AUDIT_QUERY,
        operation="listAuditEvents",
        response=_AUDIT_PAGE,
    ),
    Route(
        "GET",
        "/v1/audit/export",
        export_audit,
        AUDIT_READ,
        "Export up to 50k events (json or csv); X-Next-Cursor continues",
        query=EXPORT_QUERY,
        openapi={"responses": _EXPORT_RESPONSES},
        operation="exportAuditEvents",
        response={"type": "array", "items": _AUDIT_EVENT},
    ),
    Route(
        "POST",
        "/v1/audit/prune",
        prune_audit,
        AUDIT_PRUNE,
        "Delete events older than N days",
        request=PRUNE_IN,
        operation="pruneAuditEvents",
        response=component(
            "AuditPruned",
            {
                "type": "object",
                "required": ["deleted", "before"],
                "properties": {"deleted": {"type": "integer"}, "before": TIMESTAMP},
            },
        ),
    ),
    Route(
        "GET",
        "/v1/audit/verify",
        verify_audit,
        AUDIT_READ,
        "Verify the hash chain of the audit log",
        operation="verifyAuditChain",
        response=component(
            "AuditVerification",
            {
                "type": "object",
                "required": ["ok", "checked", "first_bad_id"],
                "properties": {
                    "ok": {"type": "boolean"},
                    "checked": {"type": "integer", "description": "events verified"},
                    "first_bad_id": nullable({"type": "string"}),
                    "reason": {"type": "string"},
                },
            },
        ),
    ),
]
