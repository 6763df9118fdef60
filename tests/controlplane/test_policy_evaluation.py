"""Policy evaluation order: deny by default, deny wins, approvals gate, most specific allow."""

from __future__ import annotations

import pytest

from controlplane.policy import Approval, Rule, evaluate

NOW = 1_000_000.0
WL, TG = "wl_a", "tg_a"


def rule(id: str, effect: str, *, wl: str | None = WL, tg: str | None = TG, ttl: int = 300) -> Rule:
    return Rule(
        id=id, provider_id="cp_" + id, effect=effect, max_ttl_seconds=ttl, workload_id=wl, target_id=tg
    )


def approval(
    status: str,
    *,
    decided: float | None = None,
    created: float = NOW - 10,
    window: int = 600,
    id: str = "apr_1",
    wl: str = WL,
) -> Approval:
    return Approval(
        id=id,
        workload_id=wl,
        target_id=TG,
        policy_id="p",
        status=status,
        created_at=created,
        decided_at=decided,
        window_seconds=window,
    )


@pytest.mark.parametrize(
    ("rules", "approvals", "outcome", "reason", "rule_id"),
    [
        ([], [], "deny", "no_matching_policy", None),
        ([rule("x", "allow", wl="wl_other")], [], "deny", "no_matching_policy", None),
        ([rule("x", "allow", tg="tg_other")], [], "deny", "no_matching_policy", None),
        ([rule("a", "allow")], [], "allow", "allowed", "a"),
        ([rule("a", "allow", wl=None, tg=None)], [], "allow", "allowed", "a"),
        ([rule("a", "allow"), rule("d", "deny", wl=None)], [], "deny", "explicit_deny", "d"),
        ([rule("a", "allow", wl=None, tg=None), rule("d", "deny")], [], "deny", "explicit_deny", "d"),
        (
            [rule("a", "allow"), rule("r", "require_approval", wl=None)],
            [],
            "approval_required",
            "approval_required",
            "r",
        ),
        ([rule("r", "require_approval")], [approval("pending")], "approval_pending", "approval_pending", "r"),
        ([rule("r", "require_approval")], [approval("approved", decided=NOW - 5)], "allow", "approved", "r"),
        (
            [rule("r", "require_approval")],
            [approval("approved", decided=NOW - 601)],
            "approval_required",
            "approval_required",
            "r",
        ),
        (
            [rule("r", "require_approval")],
            [approval("denied", decided=NOW - 5)],
            "deny",
            "approval_denied",
            "r",
        ),
        (
            [rule("r", "require_approval")],
            [approval("approved", decided=NOW - 5, wl="wl_other")],
            "approval_required",
            "approval_required",
            "r",
        ),
        (
            [rule("r", "require_approval"), rule("d", "deny")],
            [approval("approved", decided=NOW - 5)],
            "deny",
            "explicit_deny",
            "d",
        ),
    ],
)
def test_evaluation_order(rules, approvals, outcome, reason, rule_id) -> None:
    decision = evaluate(rules, workload_id=WL, target_id=TG, approvals=approvals, now=NOW)
    assert (decision.outcome, decision.reason) == (outcome, reason)
    assert (decision.rule.id if decision.rule else None) == rule_id


@pytest.mark.parametrize(
    ("rules", "chosen"),
    [
        ([rule("any", "allow", wl=None, tg=None), rule("both", "allow")], "both"),
        ([rule("wl", "allow", tg=None), rule("tg", "allow", wl=None)], "tg"),
        ([rule("any", "allow", wl=None, tg=None), rule("wl", "allow", tg=None)], "wl"),
        ([rule("long", "allow", ttl=900), rule("short", "allow", ttl=60)], "short"),
    ],
)
def test_most_specific_allow_rule_names_the_provider(rules, chosen) -> None:
    decision = evaluate(rules, workload_id=WL, target_id=TG, now=NOW)
    assert decision.allowed and decision.rule.id == chosen


def test_newest_approval_decides() -> None:
    older = approval("approved", decided=NOW - 20, id="apr_old")
    newer = approval("denied", decided=NOW - 5, id="apr_new")
    decision = evaluate(
        [rule("r", "require_approval")], workload_id=WL, target_id=TG, approvals=[older, newer], now=NOW
    )
    assert decision.reason == "approval_denied" and decision.approval.id == "apr_new"
