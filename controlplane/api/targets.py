"""/v1/targets: the APIs workloads call, and how the proxy injects their credential."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from controlplane.api._crud import Resource, crud_routes
from controlplane.errors import InvalidRequest
from controlplane.permissions import TARGETS_READ, TARGETS_WRITE
from controlplane.validation import Int, Obj, Str

__all__ = ["ROUTES", "TARGET_IN"]

HOSTNAME = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
HEADER_NAME = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # RFC 9110 token
FIELD_TEXT = r"[ -~]*"  # printable ASCII: no CR, LF, NUL or other control character in a header

INJECTION = Obj(
    {
        "type": Str(choices=("bearer", "basic", "header", "query")),
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
    }
)
TARGET_IN = Obj(
    {
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
        "injection": Obj(INJECTION.fields, default={"type": "bearer", "name": None, "prefix": None}),
    }
)


def _audience(record: dict[str, Any]) -> str:
    default_port = 443 if record["scheme"] == "https" else 80
    port = "" if record["port"] == default_port else f":{record['port']}"
    return f"{record['scheme']}://{record['host']}{port}"


async def _prepare(
    request: web.Request, body: dict[str, Any], current: dict[str, Any] | None, id: str
) -> tuple[dict[str, Any], bytes | None]:
    merged = {**(current or {}), **body}
    injection = {"name": None, "prefix": None, **merged["injection"]}
    if injection["type"] in ("header", "query") and not injection["name"]:
        raise InvalidRequest(
            f"injection.name is required for {injection['type']} injection", field="injection.name"
        )
    if merged["scheme"] == "http" and merged["tls"] == "intercept":
        raise InvalidRequest("tls intercept needs scheme https", field="tls")
    if merged["scheme"] == "https" and merged["tls"] == "none":
        raise InvalidRequest("scheme https needs tls intercept or originate", field="tls")
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
        patch=TARGET_IN.partial(),
        read=TARGETS_READ,
        write=TARGETS_WRITE,
        prepare=_prepare,
        filters={"host": Str(required=False, max_len=253), "audience": Str(required=False, max_len=512)},
        audit_fields=lambda r: {"target_service": r["name"], "audience": r["audience"]},
    )
)
