"""The governed routes of one workload: every target a policy naming it decides.

`effect` is the deciding policy's effect. A target under `require_approval` is listed whether or
not an approval is in force, so the proxy governs it and fails closed (the exchange answers 202
approval_pending and the approval request is created); `approval` says which: null (no approval
involved), "approved" (a grant is in force) or "required" (not yet requested, pending, or denied).
A target an explicit `deny` policy matches is listed too, so the proxy blocks the call with 403
policy_denied and the denial is audited instead of the request leaving without a credential.
Targets no policy for this workload matches are not listed: they pass through untouched.
"""

from __future__ import annotations

from typing import Any

from controlplane.policy import evaluate
from controlplane.registry_cache import rule_of
from controlplane.store.sql.exchange import SqlExchange
from controlplane.token_exchange import approval_of

__all__ = ["MAX_APPROVALS_CONSIDERED", "governed_routes", "route_view"]

MAX_APPROVALS_CONSIDERED = 1000


def route_view(
    target: dict[str, Any], approval: str | None = None, *, effect: str = "allow"
) -> dict[str, Any]:
    """One route as the proxy reads it (docs/token-exchange.md), with `effect` and `approval`."""
    injection = target.get("injection") or {}
    return {
        "target_id": target["id"],
        "name": target["name"],
        "host": target["host"],
        "port": target["port"],
        "scheme": target.get("scheme", "https"),
        "tls": target.get("tls", "intercept"),
        "audience": target["audience"],
        "injection": {
            "type": injection.get("type", "bearer"),
            "name": injection.get("name"),
            "prefix": injection.get("prefix"),
            **(
                {"region": injection.get("region"), "service": injection.get("service")}
                if injection.get("type") == "aws-sigv4"
                else {}
            ),
        },
        "effect": effect,
        "approval": approval,
    }


async def governed_routes(store: SqlExchange, *, workload_id: str, now: float) -> list[dict[str, Any]]:
    """Routes for every target a policy for this workload decides (allow, approval, explicit deny)."""
    rules = [rule_of(r) for r in await store.policies_for(workload_id=workload_id)]
    if not rules:
        return []
    wildcard = any(r.target_id is None for r in rules)
    ids = None if wildcard else sorted({r.target_id for r in rules if r.target_id})
    approvals = []
    if any(r.effect == "require_approval" for r in rules):
        rows = await store.approvals_for(workload_id=workload_id, limit=MAX_APPROVALS_CONSIDERED)
        approvals = [approval_of(r) for r in rows]
    routes = []
    for target in await store.targets(ids):
        decision = evaluate(
            rules, workload_id=workload_id, target_id=target["id"], approvals=approvals, now=now
        )
        rule = decision.rule
        if rule is None:
            continue  # no policy for this workload names the target: not governed
        if rule.effect == "require_approval":
            approval = "approved" if decision.allowed else "required"
            routes.append(route_view(target, approval, effect=rule.effect))
        else:
            routes.append(route_view(target, effect=rule.effect))
    return routes
