"""The governed routes of one workload: targets its policies allow, or gate behind an approval.

A target under `require_approval` is listed whether or not an approval is in force, so the proxy
governs it and fails closed (the exchange answers 202 approval_pending and the approval request is
created); `approval` says which: null (allowed outright), "approved" (a grant is in force) or
"required" (no grant in force: not yet requested, pending, or denied). Targets that only a deny
(or no) policy matches are not listed.
"""

from __future__ import annotations

from typing import Any

from controlplane.policy import evaluate
from controlplane.registry_cache import rule_of
from controlplane.store.sqlite.exchange import SqliteExchange
from controlplane.token_exchange import approval_of

__all__ = ["MAX_APPROVALS_CONSIDERED", "governed_routes", "route_view"]

MAX_APPROVALS_CONSIDERED = 1000


def route_view(target: dict[str, Any], approval: str | None = None) -> dict[str, Any]:
    """One route as the proxy reads it (BRIEF's proxy contract, plus `approval`)."""
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
        },
        "approval": approval,
    }


async def governed_routes(store: SqliteExchange, *, workload_id: str, now: float) -> list[dict[str, Any]]:
    """Routes for every target this workload may use now (allow, approved) or after an approval."""
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
        if decision.outcome == "deny" and decision.reason != "approval_denied":
            continue
        if decision.rule is not None and decision.rule.effect == "require_approval":
            routes.append(route_view(target, "approved" if decision.allowed else "required"))
        else:
            routes.append(route_view(target))
    return routes
