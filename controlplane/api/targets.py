"""/v1/targets: the APIs workloads call, and how the proxy injects their credential."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from controlplane.api._crud import Resource, crud_routes
from controlplane.api_schemas import record_schema
from controlplane.errors import Conflict, InvalidRequest
from controlplane.permissions import TARGETS_READ, TARGETS_WRITE
from controlplane.validation import Int, Obj, Str

__all__ = ["ROUTES", "TARGET_IN"]

HOSTNAME = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
HEADER_NAME = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # RFC 9110 token
AWS_SCOPE_PART = r"[a-z0-9-]+"
FIELD_TEXT = r"[ -~]*"  # printable ASCII: no CR, LF, NUL or other control character in a header

INJECTION = Obj(
    openapi={  # `_prepare`: header and query injection name their header / parameter
        "if": {"properties": {"type": {"enum": ["header", "query"]}}, "required": ["type"]},
        "then": {"required": ["name"], "properties": {"name": {"type": "string"}}},
    },
    fields={
        "type": Str(
            choices=("bearer", "basic", "header", "query", "aws-sigv4"),
            description="aws-sigv4: the proxy re-signs the request with an aws-sts credential",
        ),
        "name": Str(
            required=False,
            nullable=True,
            max_len=100,
            pattern=HEADER_NAME,
            description="header or query parameter name (header, query)",
        ),
        "prefix": Str(
            required=False,
            nullable=True,
            min_len=0,
            max_len=100,
            pattern=FIELD_TEXT,
            description="e.g. 'Token '; printable ASCII only",
        ),
        "region": Str(required=False, nullable=True, max_len=32, pattern=AWS_SCOPE_PART,
                      description="aws-sigv4 signing region (default: the SDK's, else the host's)"),
        "service": Str(required=False, nullable=True, max_len=63, pattern=AWS_SCOPE_PART,
                       description="aws-sigv4 signing service, e.g. s3 (default: as region)"),
    },
)
TARGET_IN = Obj(
    openapi={  # `_prepare`: intercept needs https (the default scheme), https needs TLS to the upstream
        "allOf": [
            {
                "if": {"properties": {"scheme": {"const": "http"}}, "required": ["scheme"]},
                "then": {"required": ["tls"], "properties": {"tls": {"enum": ["originate", "none"]}}},
            },
            {
                "if": {"properties": {"tls": {"const": "none"}}, "required": ["tls"]},
                "then": {"required": ["scheme"], "properties": {"scheme": {"const": "http"}}},
            },
        ]
    },
    fields={
        "name": Str(max_len=100),
        "host": Str(max_len=253, pattern=HOSTNAME),
        "port": Int(min=1, max=65535, default=443),
        "scheme": Str(choices=("http", "https"), default="https"),
        "tls": Str(
            choices=("intercept", "originate", "none"),
            default="intercept",
            description="intercept: app speaks TLS; originate: app speaks HTTP, proxy adds TLS",
        ),
        "audience": Str(required=False, max_len=512, description="default: scheme://host[:port]"),
        "injection": Obj(
            INJECTION.fields,
            default={"type": "bearer", "name": None, "prefix": None},
            openapi=INJECTION.openapi,
        ),
    },
)


TARGET_PATCH = Obj(
    TARGET_IN.partial().fields,
    openapi={  # only what the body alone decides; with the stored target it is 409
        "allOf": [
            {
                "if": {
                    "properties": {"scheme": {"const": "http"}, "tls": {"const": "intercept"}},
                    "required": ["scheme", "tls"],
                },
                "then": False,
            },
            {
                "if": {
                    "properties": {"scheme": {"const": "https"}, "tls": {"const": "none"}},
                    "required": ["scheme", "tls"],
                },
                "then": False,
            },
        ]
    },
)


def _audience(record: dict[str, Any]) -> str:
    default_port = 443 if record["scheme"] == "https" else 80
    port = "" if record["port"] == default_port else f":{record['port']}"
    return f"{record['scheme']}://{record['host']}{port}"


def _injection(injection: dict[str, Any], error: type[InvalidRequest] | type[Conflict]) -> dict[str, Any]:
    injection = {"name": None, "prefix": None, **injection}
    if injection["type"] in ("header", "query") and not injection["name"]:
        raise error(f"injection.name is required for {injection['type']} injection", field="injection.name")
    return injection


def _tls(scheme: str, tls: str, error: type[InvalidRequest] | type[Conflict]) -> None:
    if scheme == "http" and tls == "intercept":
        raise error("tls intercept needs scheme https", field="tls")
    if scheme == "https" and tls == "none":
        raise error("scheme https needs tls intercept or originate", field="tls")


async def _prepare(
    request: web.Request, body: dict[str, Any], current: dict[str, Any] | None, id: str
) -> tuple[dict[str, Any], bytes | None]:
    """The cross-field rules (stated in the OpenAPI schemas too): a body that breaks one is 400; a
    PATCH that breaks one only together with the stored target is 409 `conflict`."""
    if current is None or "injection" in body:
        _injection(body["injection"], InvalidRequest)
    if current is None or {"scheme", "tls"} <= body.keys():
        _tls(body["scheme"], body["tls"], InvalidRequest)
    merged = {**(current or {}), **body}
    injection = _injection(merged["injection"], Conflict)
    _tls(merged["scheme"], merged["tls"], Conflict)
    out = {**body}
    if "injection" in body or current is None:
        out["injection"] = injection
    if current is None and not body.get("audience"):
        out["audience"] = _audience(merged)
    return out, None


ROUTES = crud_routes(
    Resource(
        kind="targets",
        path="/v1/targets",
        singular="target",
        create=TARGET_IN,
        patch=TARGET_PATCH,
        read=TARGETS_READ,
        write=TARGETS_WRITE,
        prepare=_prepare,
        component="Target",
        plural="Targets",
        schema=record_schema(TARGET_IN, always=("audience",)),
        filters={"host": Str(required=False, max_len=253), "audience": Str(required=False, max_len=512)},
        audit_fields=lambda r: {"target_service": r["name"], "audience": r["audience"]},
    )
)
