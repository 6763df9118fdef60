"""The control plane aiohttp application factory.

Long-lived objects live on the app under typed keys (import them from `controlplane.appkeys`):

    app[CONFIG]        Config             validated settings
    app[CLOCK]         Clock              injected time source (tests pass a FakeClock)
    app[STORE]         SqlStore           `.registry`, `.api_keys`, `.audit`, `.db` (SQLite or PostgreSQL)
    app[AUDIT]         AuditWriter        `await app[AUDIT].record(type=..., actor=..., outcome=..., ...)`
    app[ENVELOPE]      Envelope           `seal(bytes, aad) -> bytes`, `open(bytes, aad) -> bytes`
    app[METRICS]       Metrics            `token_issued(target)`, `token_denied(reason)`
    app[API_KEYS]      ApiKeys            create / authenticate / revoke admin keys
    app[RATE_LIMITER]  Limiter            per admin API key (shared by replicas on PostgreSQL)
    app[SOURCE_LIMITER] SourceLimiter     per source address, before authentication
    app[DENIALS]       DenialLog          aggregated audit of unauthenticated denials
    app[ROUTES]        list[Route]        every registered route (drives /openapi.json, /v1/permissions)
    app[READY_CHECKS]  dict[str, check]   async callables raising on failure; /readyz runs them

Per request: `request[REQUEST_ID]`, `request[PRINCIPAL]` (ApiKey of admin callers),
`request[BODY]` / `request[QUERY]` (validated, when the Route declares a schema).

Route modules are listed in `controlplane.api.MODULES`; a module exposes `ROUTES` and may define
`setup(app)` to add its own app keys, ready checks or `cleanup_ctx` (runs after the store opens).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from controlplane.api import MODULES
from controlplane.api_keys import ApiKeys
from controlplane.appkeys import (
    API_KEYS,
    AUDIT,
    CLOCK,
    CONFIG,
    ENVELOPE,
    METRICS,
    RATE_LIMITER,
    READY_CHECKS,
    ROUTES,
    STORE,
)
from controlplane.audit import AuditUnavailable, AuditWriter
from controlplane.clock import Clock, SystemClock
from controlplane.config import Config
from controlplane.denials import DENIALS, DenialLog
from controlplane.envelope import Envelope
from controlplane.errors import StartupError
from controlplane.metrics import Metrics
from controlplane.middlewares import error_middleware, observe_middleware, source_limit_middleware
from controlplane.ratelimit import new_limiter
from controlplane.routes import Route
from controlplane.routing import register_routes
from controlplane.source_limits import SOURCE_LIMITER, SourceLimiter
from controlplane.store import SqlStore, new_store

__all__ = ["create_app"]

log = logging.getLogger(__name__)

# aiohttp answers an over-long request line or header in plain text before any middleware runs,
# so the limits must admit every request the API documents: query strings at their documented
# maximum lengths (percent-encoded) and a 64 KiB service-account token in `Authorization: Bearer`.
MAX_REQUEST_LINE_BYTES = 64 * 1024
MAX_HEADER_FIELD_BYTES = 66 * 1024


def create_app(config: Config, *, clock: Clock | None = None) -> web.Application:
    """Build the app; the store opens, migrates and the audit writer starts on app startup."""
    clock = clock or SystemClock()
    issuer, chosen_by = config.issuer()  # StartupError now when no issuer can be known
    log.info("issuer URL %s (from %s)", issuer, chosen_by)
    app = web.Application(
        client_max_size=config.max_body_bytes,
        middlewares=[observe_middleware, error_middleware, source_limit_middleware],
        handler_args={"max_line_size": MAX_REQUEST_LINE_BYTES, "max_field_size": MAX_HEADER_FIELD_BYTES},
    )
    store = new_store(config.db_location, sqlite_synchronous=config.sqlite_synchronous)
    app[CONFIG] = config
    app[CLOCK] = clock
    app[STORE] = store
    app[ENVELOPE] = Envelope.from_keys(config.kek, config.kek_previous)
    app[METRICS] = Metrics()
    app[AUDIT] = AuditWriter(store.audit, clock, batch_max=config.audit_batch_max, metrics=app[METRICS])
    app[API_KEYS] = ApiKeys(store.api_keys, clock)
    # Checked after authentication: only admins reach it, so a failed shared counter fails open.
    app[RATE_LIMITER] = new_limiter(
        store.rate_limits,
        name="admin",
        limit=config.rate_limit_per_minute,
        clock=clock,
        fail_open=True,
        metrics=app[METRICS],
    )
    app[SOURCE_LIMITER] = SourceLimiter(config.source_limits, clock)
    app[DENIALS] = DenialLog(
        app[AUDIT],
        clock,
        interval_seconds=config.source_limits.denial_interval_seconds,
        metrics=app[METRICS],
    )
    app[READY_CHECKS] = {"database": store.ping, "audit_writer": _audit_check(app)}
    app.cleanup_ctx.append(_lifecycle)
    routes: list[Route] = []
    for module in MODULES:
        routes.extend(module.ROUTES)
        setup = getattr(module, "setup", None)
        if setup is not None:
            setup(app)
    app[ROUTES] = routes
    register_routes(app, routes)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    config, store = app[CONFIG], app[STORE]
    await store.start()
    try:
        await check_kek(store, app[ENVELOPE])
        if config.bootstrap_api_key and await app[API_KEYS].ensure_bootstrap(config.bootstrap_api_key):
            log.info("registered the bootstrap API key as owner")
        await app[AUDIT].start()
        await app[DENIALS].start()
    except BaseException:
        await store.close()
        raise
    try:
        yield
    finally:
        await app[DENIALS].close()
        await app[AUDIT].close()
        await store.close()


async def check_kek(store: SqlStore, envelope: Envelope) -> None:
    """Refuse to start when sealed secrets exist that no configured KEK can open."""
    blobs = await store.sealed_blobs()
    if not blobs:
        return
    if not envelope.enabled:
        raise StartupError(
            "the database holds encrypted secrets but no key-encryption key is configured: "
            "set SESAME_KEK (base64 of 32 bytes) or SESAME_KEK_FILE"
        )
    if not all(envelope.can_open(b) for b in blobs):
        raise StartupError(
            "the configured key-encryption key did not seal the secrets in this database: "
            "set the original key as SESAME_KEK or list it in SESAME_KEK_PREVIOUS"
        )


def _audit_check(app: web.Application):
    async def check() -> None:
        if not app[AUDIT].running:
            raise AuditUnavailable("audit writer is not running")

    return check
