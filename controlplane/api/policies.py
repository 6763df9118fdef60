"""/v1/policies: who may get a credential for which target through which provider.

Deny by default; evaluation order is `controlplane.policy` (deny wins over allow). A policy may
have a name (unique); `workload_id`, `target_id` and `provider_id` accept the referenced record's
id or name and are stored as its id.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from controlplane.api._crud import Resource, crud_routes, resolve_id
from controlplane.api_schemas import record_schema
from controlplane.errors import NotFound
from controlplane.permissions import POLICIES_READ, POLICIES_WRITE
from controlplane.validation import Int, Obj, Str

__all__ = ["POLICY_IN", "ROUTES"]

DEFAULT_MAX_TTL_SECONDS = 300
MAX_TTL_SECONDS = 86_400

POLICY_IN = Obj(
    {
        "name": Str(required=False, max_len=100, pattern=r"[A-Za-z0-9][A-Za-z0-9._-]*"),
        "workload_id": Str(
            required=False, nullable=True, max_len=200, description="id or name; unset: any workload"
        ),
        "target_id": Str(
            required=False, nullable=True, max_len=200, description="id or name; unset: any target"
        ),
        "provider_id": Str(max_len=200, description="id or name"),
        "effect": Str(choices=("allow", "deny", "require_approval")),
        "max_ttl_seconds": Int(min=1, max=MAX_TTL_SECONDS, default=DEFAULT_MAX_TTL_SECONDS),
        "description": Str(required=False, min_len=0, max_len=500),
    }
)

_REFERENCES = (
    ("workload_id", "workloads"),
    ("target_id", "targets"),
    ("provider_id", "credential_providers"),
)


async def _prepare(
    request: web.Request, body: dict[str, Any], current: dict[str, Any] | None, id: str
) -> tuple[dict[str, Any], bytes | None]:
    out = dict(body)
    for field, kind in _REFERENCES:
        value = body.get(field)
        if value is not None:
            out[field] = await resolve_id(request, kind, value)
            if out[field] is None:
                raise NotFound(f"{field} {value} does not exist", field=field)
    if current is None:
        out.setdefault("workload_id", None)
        out.setdefault("target_id", None)
    return out, None


ROUTES = crud_routes(
    Resource(
        kind="policies",
        path="/v1/policies",
        singular="policy",
        create=POLICY_IN,
        patch=POLICY_IN.partial(),
        read=POLICIES_READ,
        write=POLICIES_WRITE,
        prepare=_prepare,
        component="Policy",
        plural="Policies",
        schema=record_schema(POLICY_IN, always=("workload_id", "target_id")),
        filters={
            "name": Str(required=False, max_len=100),
            "workload_id": Str(required=False, max_len=100),
            "target_id": Str(required=False, max_len=100),
            "provider_id": Str(required=False, max_len=100),
        },
        audit_fields=lambda r: {"workload_id": r.get("workload_id")},
    )
)
