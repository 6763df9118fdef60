"""JSON log lines from the control plane: one object per record on stderr (the proxy's format),
each carrying the `request_id` of the request it was written for and
the `audit_event_ids` that request wrote so far; one access line per request.

The request id and the audit event ids live in context variables that `observe_middleware` sets
for each request (aiohttp handles each request in its own task, so they never mix).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

__all__ = [
    "AccessLogger",
    "audit_event_ids",
    "configure_logging",
    "note_audit_event",
    "request_context",
]

_REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_AUDIT_IDS: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("audit_event_ids", default=None)
access_log = logging.getLogger("controlplane.access")
_RESERVED = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def request_context(request_id: str) -> list[str]:
    """Start a request's log context; returns the list its audit event ids are added to."""
    ids: list[str] = []
    _REQUEST_ID.set(request_id)
    _AUDIT_IDS.set(ids)
    return ids


def note_audit_event(event_id: str) -> None:
    """Remember an audit event written for the current request (no-op outside a request)."""
    ids = _AUDIT_IDS.get()
    if ids is not None:
        ids.append(event_id)


def audit_event_ids() -> list[str]:
    return list(_AUDIT_IDS.get() or ())


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        request_id = _REQUEST_ID.get()
        if request_id is not None and not hasattr(record, "request_id"):
            record.request_id = request_id
            ids = _AUDIT_IDS.get()
            if ids:
                record.audit_event_ids = list(ids)
        return True


def configure_logging(level: str | int = "INFO") -> None:
    """Every record as one JSON line on stderr, with the request's context."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_json_formatter())
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class AccessLogger(AbstractAccessLogger):
    """One line per request: method, path (no query string: it may carry filters), status,
    duration, request id and the audit events the request wrote."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        from controlplane.appkeys import AUDIT_EVENT_IDS, REQUEST_ID

        fields: dict[str, Any] = {
            "method": request.method,
            "path": request.path,
            "status": response.status,
            "duration_ms": round(time * 1000, 3),
            "request_id": request.get(REQUEST_ID),
        }
        ids = request.get(AUDIT_EVENT_IDS)
        if ids:
            fields["audit_event_ids"] = list(ids)
        access_log.info("%s %s %s", request.method, request.path, response.status, extra=fields)


def json_line(message: str, **fields: Any) -> str:
    """A log line for `message` in the JSON format, for output that is not a log (stdout)."""
    record = logging.makeLogRecord(
        {"name": "controlplane", "levelno": logging.INFO, "levelname": "INFO", "msg": message, **fields}
    )
    return _json_formatter().format(record)


class JsonFormatter(logging.Formatter):
    """The proxy's log line format (proxy/logs.py; the control plane imports nothing from the proxy):
    `ts`, `level`, `logger`, `msg`, then the record's own fields."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def _json_formatter() -> logging.Formatter:
    return JsonFormatter()
