"""`Route`: how every HTTP route is declared, so one table drives registration, auth and OpenAPI.

    ROUTES = [
        Route("GET", "/v1/workloads", list_workloads, WORKLOADS_READ, "List workloads", query=LIST_Q),
        Route("POST", "/v1/workloads", create_workload, WORKLOADS_WRITE, "Register a workload",
              request=WORKLOAD_IN, status=201),
        Route("POST", "/v1/token-exchange", exchange, None, "Exchange an SA token"),  # public
    ]

`permission=None` means public or custom auth (probes, JWKS, token exchange, admission webhook);
routes with custom auth name it in `auth` (an OpenAPI security scheme, e.g. `SA_TOKEN_AUTH`).
When `request`/`query` are set, the body/query string is validated before the handler runs and
is available as `request[BODY]` / `request[QUERY]` (see `controlplane.appkeys`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from controlplane.permissions import Permission
from controlplane.validation import Obj

__all__ = ["API_KEY_AUTH", "SA_TOKEN_AUTH", "Handler", "Route"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# OpenAPI security scheme names (defined in `controlplane.openapi`).
API_KEY_AUTH = "apiKey"  # every route with a permission: Authorization: Bearer ses_…
SA_TOKEN_AUTH = "serviceAccountToken"  # proxy-facing routes: Bearer <pod's projected SA token>


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    permission: Permission | None
    summary: str
    request: Obj | None = None
    query: Obj | None = None
    status: int = 200
    tags: tuple[str, ...] = ()
    # Extra OpenAPI for routes whose body is not a validated JSON object (e.g. admission review).
    openapi: dict[str, Any] = field(default_factory=dict)
    # Response content type documented in OpenAPI.
    content_type: str = "application/json"
    # Custom authentication of a `permission=None` route (an OpenAPI security scheme name).
    auth: str | None = None
    # The OpenAPI operationId: hand-chosen and stable (generated clients name methods after it).
    operation: str = ""
    # The success response's schema (usually a `controlplane.api_schemas.component` reference).
    response: dict[str, Any] | None = None

    @property
    def operation_id(self) -> str:
        return getattr(self.handler, "__name__", "handler")
