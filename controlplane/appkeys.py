"""Typed keys for the app's long-lived objects and per-request values (documented in `app.py`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from controlplane.api_keys import ApiKeys
from controlplane.audit import AuditWriter
from controlplane.clock import Clock
from controlplane.config import Config
from controlplane.envelope import Envelope
from controlplane.metrics import Metrics
from controlplane.ratelimit import Limiter
from controlplane.routes import Route
from controlplane.store.base import ApiKey
from controlplane.store.sql import SqlStore

__all__ = [
    "API_KEYS",
    "AUDIT",
    "AUDIT_EVENT_IDS",
    "BODY",
    "CLOCK",
    "CONFIG",
    "ENVELOPE",
    "METRICS",
    "PRINCIPAL",
    "QUERY",
    "RATE_LIMITER",
    "READY_CHECKS",
    "REQUEST_ID",
    "ROUTES",
    "STORE",
    "ReadyCheck",
]

ReadyCheck = Callable[[], Awaitable[None]]

CONFIG = web.AppKey("config", Config)
CLOCK = web.AppKey("clock", Clock)
STORE = web.AppKey("store", SqlStore)
AUDIT = web.AppKey("audit", AuditWriter)
ENVELOPE = web.AppKey("envelope", Envelope)
METRICS = web.AppKey("metrics", Metrics)
API_KEYS = web.AppKey("api_keys", ApiKeys)
RATE_LIMITER = web.AppKey("rate_limiter", Limiter)
ROUTES = web.AppKey("routes", list[Route])
READY_CHECKS = web.AppKey("ready_checks", dict[str, ReadyCheck])

REQUEST_ID = web.RequestKey("request_id", str)
# Ids of the audit events a request wrote (its access log line names them).
AUDIT_EVENT_IDS = web.RequestKey("audit_event_ids", list)
PRINCIPAL = web.RequestKey("principal", ApiKey)
BODY = web.RequestKey("body", dict[str, Any])
QUERY = web.RequestKey("query", dict[str, Any])
