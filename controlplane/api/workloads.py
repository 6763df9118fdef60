"""/v1/workloads: workload identity registrations (seed 000 shapes)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from controlplane.api._crud import Resource, crud_routes
from controlplane.api_schemas import TIMESTAMP, nullable
from controlplane.permissions import WORKLOADS_READ, WORKLOADS_WRITE
from controlplane.validation import Obj, Str

__all__ = ["ROUTES", "WORKLOAD_IN", "workload_view"]

ATTESTATION_TYPE = "kubernetes-service-account"
DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
STATUSES = ("active", "revoked")
WORKLOAD_VIEW_FIELDS = (
    "id", "name", "attestation_type", "namespace", "service_account", "cluster", "status",
    "labels", "created_at", "updated_at",
)

WORKLOAD_IN = Obj(
    {
        "name": Str(max_len=200, description="display name, unique"),
        "attestation": Obj(
            {
                "type": Str(choices=(ATTESTATION_TYPE,)),
                "namespace": Str(max_len=63, pattern=DNS_LABEL),
                "service_account": Str(max_len=253, pattern=DNS_SUBDOMAIN),
                "cluster": Str(required=False, max_len=200, description="name of a registered cluster"),
            }
        ),
    }
)
WORKLOAD_PATCH = Obj(
    {
        "name": Str(required=False, max_len=200),
        "status": Str(required=False, choices=STATUSES, description="revoked workloads get no tokens"),
    }
)


def workload_view(record: dict[str, Any]) -> dict[str, Any]:
    att = record["attestation"]
    return {
        "id": record["id"],
        "name": record["name"],
        "attestation_type": att["type"],
        "namespace": att["namespace"],
        "service_account": att["service_account"],
        "cluster": att.get("cluster"),
        "status": record["status"],
        "created_at": record["created_at"],
        "updated_at": record["updated_at"],
    }


async def _prepare(
    request: web.Request, body: dict[str, Any], current: dict[str, Any] | None, id: str
) -> tuple[dict[str, Any], bytes | None]:
    if current is None:
        return {**body, "status": "active"}, None
    return body, None


ROUTES = crud_routes(
    Resource(
        kind="workloads",
        path="/v1/workloads",
        singular="workload",
        create=WORKLOAD_IN,
        patch=WORKLOAD_PATCH,
        read=WORKLOADS_READ,
        write=WORKLOADS_WRITE,
        view=workload_view,
        component="Workload",
        plural="Workloads",
        schema={
            "type": "object",
            "required": [*WORKLOAD_VIEW_FIELDS],
            "properties": {
                "id": {"type": "string"},
                "name": {"type": "string"},
                "attestation_type": {"type": "string", "enum": [ATTESTATION_TYPE]},
                "namespace": {"type": "string"},
                "service_account": {"type": "string"},
                "cluster": nullable({"type": "string"}),
                "status": {"type": "string", "enum": list(STATUSES)},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "created_at": TIMESTAMP,
                "updated_at": TIMESTAMP,
            },
        },
        created_schema={
            "type": "object",
            "required": ["id", "name", "status"],
            "properties": {
                "id": {"type": "string"},
                "name": {"type": "string"},
                "status": {"type": "string", "enum": list(STATUSES)},
            },
        },
        created_view=lambda r: {"id": r["id"], "name": r["name"], "status": r["status"]},
        prepare=_prepare,
        filters={
            "namespace": Str(required=False, max_len=63),
            "service_account": Str(required=False, max_len=253),
            "status": Str(required=False, choices=STATUSES),
        },
        audit_fields=lambda r: {"workload_id": r["id"]},
        update_type=lambda body: {"revoked": "workload.revoked", "active": "workload.restored"}.get(
            body.get("status", ""), "workload.updated"
        ),
    )
)
