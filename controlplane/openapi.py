"""The OpenAPI 3.1 document, generated from the registered `Route` table."""

from __future__ import annotations

import re
from typing import Any

from controlplane.api_schemas import COMPONENTS
from controlplane.routes import API_KEY_AUTH, SA_TOKEN_AUTH, Route

__all__ = ["SECURITY_SCHEMES", "build_openapi"]

_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")

def _camel(name: str) -> str:
    """`post_create_thing` -> `postCreateThing` (routes that name no operation; ours all do)."""
    first, *rest = name.split("_")
    return first + "".join(part.capitalize() for part in rest)


_PATH_PARAMETERS = {
    "id": "the object's id; registry resources (workloads, clusters, targets, credential providers, "
    "policies) also take its name",
    "scope": "which webhook configuration calls: pod or namespace",
}

_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "description": "stable error code"},
        "message": {"type": "string"},
        "field": {"type": "string", "description": "offending field (invalid_request only)"},
    },
}


SECURITY_SCHEMES = {
    API_KEY_AUTH: {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "ses_…",
        "description": "Admin API key (`ses_` + 32 or more characters); each operation's `x-permission` "
        "and `x-min-role` name what the key's role needs.",
    },
    SA_TOKEN_AUTH: {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "The pod's projected Kubernetes service-account token (audience `sesame`), "
        "verified like token exchange's `subject_token` (JWKS or TokenReview of a registered cluster).",
    },
}


def build_openapi(routes: list[Route], *, version: str = "0.1.0") -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    operations: set[str] = set()
    for route in routes:
        path = _PARAM.sub(r"{\1}", route.path)
        operation = route.operation or _camel(f"{route.method.lower()}_{route.operation_id}")
        if operation in operations:
            raise ValueError(f"{route.method} {route.path}: operation id {operation} is taken")
        operations.add(operation)
        op: dict[str, Any] = {
            "operationId": operation,
            "summary": route.summary,
            "tags": list(route.tags) or [_tag(path)],
            "responses": _responses(route),
        }
        params = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
                "description": _PATH_PARAMETERS.get(name, ""),
            }
            for name in _PARAM.findall(route.path)
        ]
        if route.query is not None:
            for name, spec in route.query.fields.items():
                params.append(
                    {
                        "name": name,
                        "in": "query",
                        "required": spec.required and "default" not in spec.json_schema(),
                        "schema": spec.json_schema(),
                    }
                )
        if params:
            op["parameters"] = params
        if route.request is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": route.request.json_schema()}},
            }
        extra = dict(route.openapi)
        op["responses"] = {**op["responses"], **extra.pop("responses", {})}
        op.update(extra)
        op["security"] = _security(route)
        if route.permission is not None:
            op["x-permission"] = route.permission.name
            op["x-min-role"] = route.permission.role.label
        paths.setdefault(path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Sesame control plane",
            "version": version,
            "description": "Admin API (Bearer API key `ses_…`) and the proxy/workload endpoints.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": SECURITY_SCHEMES,
            "schemas": {"Error": _ERROR_SCHEMA, **dict(sorted(COMPONENTS.items()))},
        },
    }


def _security(route: Route) -> list[dict[str, list[str]]]:
    """The operation's security requirement: the API key, the route's own scheme, or none (public)."""
    if route.permission is not None:
        return [{API_KEY_AUTH: []}]
    if route.auth is not None:
        if route.auth not in SECURITY_SCHEMES:
            raise ValueError(f"{route.method} {route.path}: unknown security scheme {route.auth!r}")
        return [{route.auth: []}]
    return []


def _tag(path: str) -> str:
    parts = [p for p in path.split("/") if p and p != "v1" and not p.startswith("{")]
    return parts[0] if parts else "root"


def _responses(route: Route) -> dict[str, Any]:
    error = {
        "description": "error",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    success: dict[str, Any] = {"description": route.summary}
    if route.status != 204:
        success["content"] = {route.content_type: {"schema": route.response or {}}}
    out: dict[str, Any] = {str(route.status): success}
    if route.request is not None or route.query is not None:
        out["400"] = error
    if route.permission is not None:
        out["401"] = error
        out["403"] = error
        out["429"] = error
    elif route.auth is not None:
        out["401"] = error
    if "{" in route.path:
        out["404"] = error
    out["default"] = error
    return out
