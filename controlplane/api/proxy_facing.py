"""Routes the sidecar calls with its service-account token, and the admin views they feed.

`GET /v1/proxy/routes` (ETag / If-None-Match), `POST /v1/proxy/heartbeat` → `GET /v1/proxies`,
`POST /v1/proxy/observations` → `GET /v1/discovery`. A caller that fails attestation (401), or
whose workload is unknown (404) or revoked (403), is refused and audited as `proxy.denied`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from aiohttp import web

from controlplane.api_schemas import TIMESTAMP, component, nullable, page_of
from controlplane.appkeys import CLOCK, CONFIG, QUERY
from controlplane.attest import InvalidSubjectToken
from controlplane.denials import audit_unauthenticated
from controlplane.errors import SesameError
from controlplane.exchange_services import EXCHANGE
from controlplane.http import audit_event, cursor_seq, json_response, now_ts, page_response
from controlplane.pagination import LIST_QUERY
from controlplane.permissions import Permission, Role
from controlplane.proxy_routes import governed_routes
from controlplane.routes import SA_TOKEN_AUTH, Handler, Route
from controlplane.routing import bearer_token
from controlplane.token_exchange import Attested
from controlplane.validation import Bool, Int, List, Obj, Str, decode_json, parse_json

__all__ = ["DISCOVERY_READ", "PROXIES_READ", "ROUTES"]

PROXIES_READ = Permission("proxies.read", Role.VIEWER, "List sidecar proxies and their last heartbeat")
DISCOVERY_READ = Permission("discovery.read", Role.VIEWER, "See which workloads call which hosts")
MAX_OBSERVATIONS = 500

HEARTBEAT_IN = Obj(
    {
        "pod": Str(max_len=253, description="pod name"),
        "version": Str(max_len=100, description="proxy version"),
    }
)
OBSERVATION = Obj(
    {
        "host": Str(max_len=253),
        "port": Int(min=1, max=65535),
        "count": Int(min=0, max=2**31),
        "governed": Bool(),
    }
)
OBSERVATIONS_IN = List(item=OBSERVATION, max_items=MAX_OBSERVATIONS)
PROXIES_Q = Obj({**LIST_QUERY, "workload_id": Str(required=False, max_len=100)})
DISCOVERY_Q = Obj(
    {
        **LIST_QUERY,
        "workload_id": Str(required=False, max_len=100),
        "host": Str(required=False, max_len=253),
        "governed": Bool(required=False),
    }
)


async def _caller(request: web.Request) -> Attested:
    """The workload behind the SA token in `Authorization: Bearer`; every refusal is audited."""
    ctx: dict[str, Any] = {}
    try:
        token = bearer_token(request)
        if token is None:
            raise InvalidSubjectToken(
                "missing_token", "missing Authorization: Bearer <service-account token>"
            )
        return await request.app[EXCHANGE].attest(token, ctx)
    except SesameError as exc:
        identity = ctx.get("identity")
        if identity is None:  # no caller known: aggregated per source (controlplane.denials)
            await audit_unauthenticated(
                request,
                type="proxy.denied",
                reason=exc.code,
                detail=getattr(exc, "reason", None),
                extra={"path": request.path},
            )
            raise
        await audit_event(
            request,
            type="proxy.denied",
            outcome="denied",
            reason=exc.code,
            actor=f"workload:{ctx['workload_id']}" if ctx.get("workload_id") else "anonymous",
            workload_id=ctx.get("workload_id"),
            extra={
                "path": request.path,
                "detail": getattr(exc, "reason", None),
                **(identity.audit_fields() if identity else {}),
            },
        )
        raise


async def proxy_routes(request: web.Request) -> web.StreamResponse:
    caller = await _caller(request)
    routes = await governed_routes(
        request.app[EXCHANGE].store, workload_id=caller.workload["id"], now=request.app[CLOCK].time()
    )
    body = {"routes": routes, "refresh_seconds": request.app[CONFIG].exchange.routes_refresh_seconds}
    etag = '"' + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if etag in [t.strip() for t in request.headers.get("If-None-Match", "").split(",")]:
        return web.Response(status=304, headers=headers)
    return json_response(body, headers=headers)


async def proxy_heartbeat(request: web.Request) -> web.Response:
    caller = await _caller(request)
    body = parse_json(await request.read(), HEARTBEAT_IN)
    await request.app[EXCHANGE].store.heartbeat(
        workload_id=caller.workload["id"],
        pod=body["pod"],
        pod_uid=caller.identity.pod_uid,
        version=body["version"],
        now=now_ts(request),
    )
    return web.Response(status=204)


async def proxy_observations(request: web.Request) -> web.Response:
    caller = await _caller(request)
    data = decode_json(await request.read())
    observations = OBSERVATIONS_IN.check(data, "body")
    if observations:
        await request.app[EXCHANGE].store.observe(
            workload_id=caller.workload["id"], observations=observations, now=now_ts(request)
        )
    return web.Response(status=204)


async def list_proxies(request: web.Request) -> web.Response:
    page = await request.app[EXCHANGE].store.list_proxies(
        limit=request[QUERY]["limit"],
        after_seq=cursor_seq(request),
        workload_id=request[QUERY].get("workload_id"),
    )
    return page_response(page)


async def discovery(request: web.Request) -> web.Response:
    query = request[QUERY]
    page = await request.app[EXCHANGE].store.list_observations(
        limit=query["limit"],
        after_seq=cursor_seq(request),
        host=query.get("host"),
        workload_id=query.get("workload_id"),
        governed=query.get("governed"),
    )
    return page_response(page)


_ROUTE = {
    "type": "object",
    "required": ["target_id", "name", "host", "port", "scheme", "tls", "audience", "injection", "effect"],
    "properties": {
        "target_id": {"type": "string"},
        "name": {"type": "string"},
        "host": {"type": "string"},
        "port": {"type": "integer"},
        "scheme": {"type": "string", "enum": ["http", "https"]},
        "tls": {"type": "string"},
        "audience": {"type": "string"},
        "injection": {"type": "object"},
        "effect": {"type": "string", "enum": ["allow", "deny", "require_approval"]},
        "approval": nullable({"type": "string"}),
    },
}
_PROXY_ROUTES = component(
    "ProxyRoutes",
    {
        "type": "object",
        "required": ["routes", "refresh_seconds"],
        "properties": {
            "routes": {"type": "array", "items": _ROUTE},
            "refresh_seconds": {"type": "number"},
        },
    },
)
component(
    "Proxy",
    {
        "type": "object",
        "required": ["workload_id", "pod", "version", "first_seen", "last_seen"],
        "properties": {
            "workload_id": {"type": "string"},
            "pod": {"type": "string"},
            "pod_uid": nullable({"type": "string"}),
            "version": {"type": "string"},
            "first_seen": TIMESTAMP,
            "last_seen": TIMESTAMP,
        },
    },
)
component(
    "Observation",
    {
        "type": "object",
        "required": ["workload_id", "host", "port", "governed", "count", "first_seen", "last_seen"],
        "properties": {
            "workload_id": {"type": "string"},
            "host": {"type": "string"},
            "port": {"type": "integer"},
            "governed": {"type": "boolean"},
            "count": {"type": "integer"},
            "first_seen": TIMESTAMP,
            "last_seen": TIMESTAMP,
        },
    },
)

_BEARER_SA = {"description": "Called by the sidecar with the pod's projected service-account token."}


def _sidecar_post(path: str, handler: Handler, summary: str, body: Obj | List, operation: str) -> Route:
    """A sidecar POST answered with 204; its JSON body is validated by the handler, after SA-token auth."""
    schema = {"required": True, "content": {"application/json": {"schema": body.json_schema()}}}
    return Route(
        "POST",
        path,
        handler,
        None,
        summary,
        status=204,
        tags=("proxy",),
        auth=SA_TOKEN_AUTH,
        openapi={**_BEARER_SA, "requestBody": schema},
        operation=operation,
    )


ROUTES = [
    Route(
        "GET",
        "/v1/proxy/routes",
        proxy_routes,
        None,
        "Governed routes of the calling workload",
        tags=("proxy",),
        auth=SA_TOKEN_AUTH,
        openapi={**_BEARER_SA, "responses": {"304": {"description": "unchanged since If-None-Match"}}},
        operation="getProxyRoutes",
        response=_PROXY_ROUTES,
    ),
    _sidecar_post(
        "/v1/proxy/heartbeat", proxy_heartbeat, "Report a sidecar's liveness", HEARTBEAT_IN, "reportHeartbeat"
    ),
    _sidecar_post(
        "/v1/proxy/observations",
        proxy_observations,
        "Report outbound hosts the workload called (counts only)",
        OBSERVATIONS_IN,
        "reportObservations",
    ),
    Route(
        "GET",
        "/v1/proxies",
        list_proxies,
        PROXIES_READ,
        "Sidecar fleet: pod, version, last seen",
        query=PROXIES_Q,
        operation="listProxies",
        response=page_of("Proxy"),
    ),
    Route(
        "GET",
        "/v1/discovery",
        discovery,
        DISCOVERY_READ,
        "Which workloads call which hosts",
        query=DISCOVERY_Q,
        operation="listDiscovery",
        response=page_of("Observation"),
    ),
]
