"""/v1/approvals: the human-in-the-loop queue for `require_approval` policies."""

from __future__ import annotations

from aiohttp import web

from controlplane.api_schemas import TIMESTAMP, component, nullable, page_of
from controlplane.appkeys import QUERY
from controlplane.errors import NotFound
from controlplane.exchange_services import EXCHANGE
from controlplane.http import actor_of, audit_event, cursor_seq, json_response, now_ts, page_response
from controlplane.pagination import LIST_QUERY
from controlplane.permissions import Permission, Role
from controlplane.routes import Handler, Route
from controlplane.token_exchange import approval_view
from controlplane.validation import Int, Obj, Str, parse_json

__all__ = ["APPROVALS_DECIDE", "APPROVALS_READ", "ROUTES"]

APPROVALS_READ = Permission("approvals.read", Role.ADMIN, "List pending and decided approvals")
APPROVALS_DECIDE = Permission("approvals.decide", Role.ADMIN, "Approve or deny a pending approval")
MAX_WINDOW_SECONDS = 30 * 86_400

LIST_Q = Obj({**LIST_QUERY, "status": Str(required=False, choices=("pending", "approved", "denied"))})
DECIDE_IN = Obj(
    {
        "window_seconds": Int(
            required=False,
            min=1,
            max=MAX_WINDOW_SECONDS,
            description="how long an approval lets exchanges succeed (default: configured)",
        ),
        "comment": Str(required=False, min_len=0, max_len=500),
    }
)


async def list_approvals(request: web.Request) -> web.Response:
    page = await request.app[EXCHANGE].store.list_approvals(
        limit=request[QUERY]["limit"], after_seq=cursor_seq(request), status=request[QUERY].get("status")
    )
    page.rows[:] = [approval_view(r) for r in page.rows]
    return page_response(page)


def _decide(status: str) -> Handler:
    async def decide(request: web.Request) -> web.Response:
        approval_id = request.match_info["id"]
        raw = await request.read()
        body = parse_json(raw, DECIDE_IN) if raw.strip() else {}
        row = await request.app[EXCHANGE].store.decide_approval(
            approval_id,
            status=status,
            decided_by=actor_of(request),
            now=now_ts(request),
            window_seconds=body.get("window_seconds"),
        )
        if row is None:
            raise NotFound(f"no approval {approval_id}")
        await audit_event(
            request,
            type=f"approval.{status}",
            workload_id=row["workload_id"],
            extra={
                "approval_id": approval_id,
                "target_id": row["target_id"],
                "window_seconds": row["window_seconds"],
                "comment": body.get("comment"),
            },
        )
        return json_response(approval_view(row))

    decide.__name__ = "approve" if status == "approved" else "deny"
    return decide


_DECIDE_DOC = {
    "requestBody": {"required": False, "content": {"application/json": {"schema": DECIDE_IN.json_schema()}}}
}

_APPROVAL = component(
    "Approval",
    {
        "type": "object",
        "required": ["id", "workload_id", "target_id", "status", "created_at"],
        "properties": {
            "id": {"type": "string"},
            "workload_id": {"type": "string"},
            "target_id": {"type": "string"},
            "policy_id": nullable({"type": "string"}),
            "status": {"type": "string", "enum": ["pending", "approved", "denied"]},
            "window_seconds": nullable({"type": "integer"}),
            "requested_by": nullable({"type": "string"}),
            "decided_by": nullable({"type": "string"}),
            "created_at": TIMESTAMP,
            "decided_at": nullable(TIMESTAMP),
            "expires_at": {**TIMESTAMP, "description": "approved: when the window ends"},
        },
    },
)

ROUTES = [
    Route(
        "GET",
        "/v1/approvals",
        list_approvals,
        APPROVALS_READ,
        "List approvals",
        query=LIST_Q,
        operation="listApprovals",
        response=page_of("Approval"),
    ),
    Route(
        "POST",
        "/v1/approvals/{id}/approve",
        _decide("approved"),
        APPROVALS_DECIDE,
        "Approve: exchanges for (workload, target) succeed for the window",
        openapi=_DECIDE_DOC,
        operation="approveApproval",
        response=_APPROVAL,
    ),
    Route(
        "POST",
        "/v1/approvals/{id}/deny",
        _decide("denied"),
        APPROVALS_DECIDE,
        "Deny: exchanges for (workload, target) are refused for the window",
        openapi=_DECIDE_DOC,
        operation="denyApproval",
        response=_APPROVAL,
    ),
]
