"""/openapi.json and /v1/permissions: documents derived from the registered routes."""

from __future__ import annotations

from aiohttp import web

from controlplane.api_schemas import component
from controlplane.appkeys import ROUTES as ROUTES_KEY
from controlplane.http import json_response
from controlplane.openapi import build_openapi
from controlplane.permissions import PERMISSIONS_READ, ROLE_NAMES, Permission, Role
from controlplane.routes import Route

__all__ = ["ROUTES", "permission_catalog"]


def permission_catalog(routes: list[Route]) -> list[Permission]:
    """Every distinct permission the routes declare, sorted by name."""
    found: dict[str, Permission] = {}
    for route in routes:
        if route.permission is not None:
            found.setdefault(route.permission.name, route.permission)
    return sorted(found.values(), key=lambda p: p.name)


async def openapi(request: web.Request) -> web.Response:
    return json_response(build_openapi(request.app[ROUTES_KEY]))


async def permissions(request: web.Request) -> web.Response:
    catalog = permission_catalog(request.app[ROUTES_KEY])
    return json_response(
        {
            "roles": list(ROLE_NAMES),
            "data": [
                {
                    "name": p.name,
                    "description": p.description,
                    "min_role": p.role.label,
                    "roles": [r.label for r in Role if p.allows(r)],
                }
                for p in catalog
            ],
        },
        headers={"Cache-Control": "max-age=300"},
    )


_PERMISSION = component(
    "Permission",
    {
        "type": "object",
        "required": ["name", "description", "min_role", "roles"],
        "properties": {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "min_role": {"type": "string", "enum": list(ROLE_NAMES)},
            "roles": {"type": "array", "items": {"type": "string", "enum": list(ROLE_NAMES)}},
        },
    },
)

ROUTES = [
    Route(
        "GET",
        "/openapi.json",
        openapi,
        None,
        "OpenAPI 3.1 document of every route",
        operation="getOpenApiDocument",
        response={"type": "object", "description": "OpenAPI 3.1"},
    ),
    Route(
        "GET",
        "/v1/permissions",
        permissions,
        PERMISSIONS_READ,
        "Permission catalog",
        operation="listPermissions",
        response=component(
            "PermissionCatalog",
            {
                "type": "object",
                "required": ["roles", "data"],
                "properties": {
                    "roles": {"type": "array", "items": {"type": "string", "enum": list(ROLE_NAMES)}},
                    "data": {"type": "array", "items": _PERMISSION},
                },
            },
        ),
    ),
]
