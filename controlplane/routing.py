"""Registers `Route`s on the app: admin auth, rate limit, permission check, body/query parsing.

Every denial (401, 403, 429) is written to the audit log as `auth.denied` with the error code
as reason before the error is answered; a 401 (no caller known) goes through the aggregated
`controlplane.denials` log, so a flood of bad keys cannot grow the log without bound.
"""

from __future__ import annotations

import re

from aiohttp import web

from controlplane.appkeys import API_KEYS, BODY, PRINCIPAL, QUERY, RATE_LIMITER, REQUEST_ID
from controlplane.denials import audit_unauthenticated
from controlplane.errors import Forbidden, RateLimited, Unauthorized
from controlplane.http import audit_event, read_body
from controlplane.permissions import Role
from controlplane.routes import Handler, Route
from controlplane.validation import parse_json, parse_query

__all__ = ["bearer_token", "register_routes"]

_BEARER = re.compile(r"Bearer\s+(\S+)\s*$", re.IGNORECASE)


def bearer_token(request: web.Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if any."""
    match = _BEARER.match(request.headers.get("Authorization", ""))
    return match.group(1) if match else None


def register_routes(app: web.Application, routes: list[Route]) -> None:
    for route in routes:
        app.router.add_route(route.method, route.path, _wrap(route))


def _wrap(route: Route) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        if route.permission is not None:
            await _authorize(request, route)
        if route.query is not None:
            request[QUERY] = parse_query(route.query, request.query)
        if route.request is not None:
            request[BODY] = parse_json(await read_body(request), route.request)
        return await route.handler(request)

    handler.__name__ = route.operation_id
    handler.__doc__ = route.summary
    return handler


async def _authorize(request: web.Request, route: Route) -> None:
    assert route.permission is not None
    try:
        token = bearer_token(request)
        if token is None:
            raise Unauthorized("missing Authorization: Bearer <api key>")
        key = await request.app[API_KEYS].authenticate(token)
        request[PRINCIPAL] = key
        await request.app[RATE_LIMITER].acquire(key.id)
        if not route.permission.allows(Role.parse(key.role)):
            raise Forbidden(f"role {key.role} lacks permission {route.permission.name}")
    except Unauthorized as exc:
        await audit_unauthenticated(
            request,
            type="auth.denied",
            reason=exc.code,
            extra={"method": request.method, "path": request.path},
        )
        raise
    except (Forbidden, RateLimited) as exc:
        await audit_event(
            request,
            type="auth.denied",
            outcome="denied",
            reason=exc.code,
            extra={"method": request.method, "path": request.path, "request_id": request.get(REQUEST_ID)},
        )
        raise
