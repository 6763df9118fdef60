"""Middlewares: request id + metrics (outermost), then errors → JSON, body size limit → 413, then
the per-source limit (429) before any handler authenticates anything."""

from __future__ import annotations

import logging
import re
import time
from random import getrandbits

from aiohttp import web

from controlplane.appkeys import AUDIT_EVENT_IDS, CONFIG, METRICS, REQUEST_ID
from controlplane.denials import audit_unauthenticated
from controlplane.errors import PayloadTooLarge, SesameError
from controlplane.logs import request_context
from controlplane.routes import Handler
from controlplane.source_limits import EXEMPT_PATHS, SOURCE_LIMITER, SourceRateLimited, source_of

__all__ = ["error_middleware", "observe_middleware", "source_limit_middleware"]

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    400: "invalid_request",
    415: "unsupported_media_type",
}


@web.middleware
async def observe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Honour or mint X-Request-Id, echo it, and count/time the request by route template."""
    presented = request.headers.get(REQUEST_ID_HEADER, "")
    # A correlation id, not a secret: the non-cryptographic PRNG is enough (and no syscall).
    request_id = presented if _VALID_REQUEST_ID.fullmatch(presented) else f"{getrandbits(128):032x}"
    request[REQUEST_ID] = request_id
    request[AUDIT_EVENT_IDS] = request_context(request_id)
    start = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        if not response.prepared:
            response.headers[REQUEST_ID_HEADER] = request_id
        return response
    except web.HTTPException as exc:  # 2xx/3xx raised by handlers (e.g. 304 Not Modified)
        status = exc.status
        exc.headers[REQUEST_ID_HEADER] = request_id
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        request.app[METRICS].observe_request(route, request.method, status, time.perf_counter() - start)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into `{"error": code, "message": ...}` with its status."""
    limit = request.app[CONFIG].max_body_bytes
    try:
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLarge(f"request body larger than {limit} bytes")
        return await handler(request)
    except SesameError as exc:
        if exc.status >= 500:
            log.error("%s: %s", exc.code, exc.message)
        return _error(exc.status, exc.body(), exc.headers())
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, f"http_{exc.status}")
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return _error(exc.status, {"error": code, "message": exc.reason.lower()}, headers)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return _error(500, {"error": "internal", "message": "internal error"}, {})


def _error(status: int, body: dict[str, object], headers: dict[str, str]) -> web.Response:
    body = {k: v for k, v in body.items() if v is not None}
    return web.json_response(body, status=status, headers=headers)


@web.middleware
async def source_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """429 `rate_limited` before the handler (so before authentication) when the caller's address
    is over its limit; audited as `request.limited`, aggregated per source."""
    if request.path not in EXEMPT_PATHS:
        try:
            request.app[SOURCE_LIMITER].check(source_of(request))
        except SourceRateLimited as exc:
            await audit_unauthenticated(
                request, type="request.limited", reason=exc.code, extra={"path": request.path}
            )
            raise
    return await handler(request)
