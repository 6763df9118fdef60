"""Policy evaluation: may this workload get a credential for this target, and through which provider?

Pure functions over the matching rules and approvals; the store finds them, the route acts.

Order (documented in docs/token-exchange.md):
1. A rule matches when its `workload_id` and `target_id` are each unset (any) or equal.
2. No matching rule → deny (`no_matching_policy`): deny by default.
3. Any matching `deny` → deny (`explicit_deny`): deny wins over everything.
4. Any matching `require_approval` → it needs an approval for (workload, target): approved and
   inside its window → allow; pending → approval_pending; denied and inside its window →
   deny (`approval_denied`); otherwise a new approval is requested. Approval wins over allow.
5. Otherwise allow, through the most specific allow rule (workload+target, then target, then
   workload, then wildcard; ties by the shortest max TTL, then id).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "DEFAULT_APPROVAL_WINDOW_SECONDS",
    "Approval",
    "Decision",
    "Rule",
    "evaluate",
    "matches",
]

DEFAULT_APPROVAL_WINDOW_SECONDS = 3600

Effect = Literal["allow", "deny", "require_approval"]
Outcome = Literal["allow", "deny", "approval_pending", "approval_required"]


@dataclass(frozen=True, kw_only=True)
class Rule:
    id: str
    provider_id: str
    effect: Effect
    max_ttl_seconds: int
    workload_id: str | None = None
    target_id: str | None = None

    @property
    def specificity(self) -> int:
        return (
            (2 if self.target_id else 0)
            + (1 if self.workload_id else 0)
            + (1 if self.workload_id and self.target_id else 0)
        )


@dataclass(frozen=True, kw_only=True)
class Approval:
    """A human decision on (workload, target): `decided_at` + `window_seconds` bounds a grant."""

    id: str
    workload_id: str
    target_id: str
    policy_id: str
    status: Literal["pending", "approved", "denied"]
    created_at: float
    decided_at: float | None = None
    window_seconds: int = DEFAULT_APPROVAL_WINDOW_SECONDS

    def in_window(self, now: float) -> bool:
        return self.decided_at is not None and now < self.decided_at + self.window_seconds


@dataclass(frozen=True, kw_only=True)
class Decision:
    outcome: Outcome
    reason: str
    rule: Rule | None = None
    approval: Approval | None = None

    @property
    def allowed(self) -> bool:
        return self.outcome == "allow"


def matches(rule: Rule, *, workload_id: str, target_id: str) -> bool:
    return rule.workload_id in (None, workload_id) and rule.target_id in (None, target_id)


def evaluate(
    rules: Iterable[Rule],
    *,
    workload_id: str,
    target_id: str,
    approvals: Iterable[Approval] = (),
    now: float,
) -> Decision:
    """Decide one exchange; see the module docstring for the order."""
    matching = [r for r in rules if matches(r, workload_id=workload_id, target_id=target_id)]
    if not matching:
        return Decision(outcome="deny", reason="no_matching_policy")
    by_effect = {
        effect: _most_specific([r for r in matching if r.effect == effect])
        for effect in ("deny", "require_approval", "allow")
    }
    if by_effect["deny"] is not None:
        return Decision(outcome="deny", reason="explicit_deny", rule=by_effect["deny"])
    gated = by_effect["require_approval"]
    if gated is not None:
        return _with_approval(
            gated, workload_id=workload_id, target_id=target_id, approvals=approvals, now=now
        )
    return Decision(outcome="allow", reason="allowed", rule=by_effect["allow"])


def _with_approval(
    rule: Rule, *, workload_id: str, target_id: str, approvals: Iterable[Approval], now: float
) -> Decision:
    mine = sorted(
        (a for a in approvals if a.workload_id == workload_id and a.target_id == target_id),
        key=lambda a: (a.decided_at or a.created_at, a.id),
        reverse=True,
    )
    for approval in mine:
        if approval.status == "pending":
            return Decision(
                outcome="approval_pending", reason="approval_pending", rule=rule, approval=approval
            )
        if approval.in_window(now):
            if approval.status == "approved":
                return Decision(outcome="allow", reason="approved", rule=rule, approval=approval)
            return Decision(outcome="deny", reason="approval_denied", rule=rule, approval=approval)
    return Decision(outcome="approval_required", reason="approval_required", rule=rule)


def _most_specific(rules: list[Rule]) -> Rule | None:
    if not rules:
        return None
    return min(rules, key=lambda r: (-r.specificity, r.max_ttl_seconds, r.id))
