"""/healthz, /readyz, /metrics: public probes."""

from __future__ import annotations

import asyncio

from aiohttp import web

from controlplane.api_schemas import component
from controlplane.appkeys import METRICS, READY_CHECKS
from controlplane.http import json_response
from controlplane.metrics import CONTENT_TYPE
from controlplane.routes import Route
from controlplane.scrape_gauges import refresh_gauges

__all__ = ["ROUTES"]

CHECK_TIMEOUT_SECONDS = 2.0


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 when every readiness check passes, else 503 with the per-check map."""
    checks: dict[str, str] = {}
    for name, check in request.app[READY_CHECKS].items():
        try:
            await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS)
            checks[name] = "ok"
        except TimeoutError:
            checks[name] = "timed out"
        except Exception as exc:
            checks[name] = getattr(exc, "message", None) or type(exc).__name__
    ok = all(v == "ok" for v in checks.values())
    return json_response(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503
    )


async def metrics(request: web.Request) -> web.Response:
    await refresh_gauges(request.app)
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


_JSON_HEALTH = {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}
_HEALTH = component(
    "Health",
    {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "unavailable"]},
            "checks": {"type": "object", "additionalProperties": {"type": "string"}, "description": "readyz"},
        },
    },
)

ROUTES = [
    Route("GET", "/healthz", healthz, None, "Liveness: always 200", operation="getHealth", response=_HEALTH),
    Route(
        "GET",
        "/readyz",
        readyz,
        None,
        "Readiness: 200, or 503 with the failing checks",
        operation="getReadiness",
        response=_HEALTH,
        openapi={"responses": {"503": {"description": "not ready", "content": _JSON_HEALTH}}},
    ),
    Route(
        "GET",
        "/metrics",
        metrics,
        None,
        "Prometheus metrics",
        content_type="text/plain",
        operation="getMetrics",
        response={"type": "string", "description": "Prometheus text exposition format"},
    ),
]
