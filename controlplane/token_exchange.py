"""The token-exchange pipeline (RFC 8693): attest → workload → target → policy → provider → audit.

Every outcome is one audit event committed before the caller answers: `token.issued`, or
`token.denied` with the error code as `reason` (and the attestation or policy detail in extra).
A denial before any identity is known (bad body, unverifiable token) goes through the aggregated
`controlplane.denials` log: anyone can send those.
Neither a subject token nor an issued credential is ever written to the audit log or logs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane.attest import Attestor, Identity
from controlplane.audit import AuditWriter
from controlplane.clock import Clock, format_ts, parse_ts
from controlplane.denials import DenialLog
from controlplane.errors import SesameError
from controlplane.exchange_settings import DEFAULT_EXCHANGE_RATE_LIMIT_PER_MINUTE
from controlplane.metrics import Metrics
from controlplane.policy import DEFAULT_APPROVAL_WINDOW_SECONDS, Approval, Decision, Rule, evaluate
from controlplane.providers import (
    CredentialProvider,
    GuardSettings,
    IssuedCredential,
    MintRequest,
    ProviderGuard,
    UpstreamMintFailed,
)
from controlplane.ratelimit import Limiter, RateLimiter
from controlplane.registry_cache import RegistryCache
from controlplane.store.sql.exchange import SqlExchange

__all__ = [
    "DEFAULT_EXCHANGE_RATE_LIMIT_PER_MINUTE",
    "ApprovalPending",
    "Exchanged",
    "PolicyDenied",
    "TokenExchange",
    "UnknownTarget",
    "UnknownWorkload",
    "UpstreamMintFailed",
    "WorkloadRevoked",
    "approval_view",
]


class UnknownWorkload(SesameError):
    """The attested identity is not a registered workload."""

    code, status = "unknown_workload", 404


class WorkloadRevoked(SesameError):
    """The workload is registered but revoked."""

    code, status = "workload_revoked", 403


class UnknownTarget(SesameError):
    """No target has the requested audience."""

    code, status = "unknown_target", 404


class PolicyDenied(SesameError):
    """No policy allows this workload to reach this target (deny by default), or one denies it."""

    code, status = "policy_denied", 403


@dataclass(frozen=True, kw_only=True)
class ApprovalPending:
    """A require_approval policy matched and no approval is in force yet (answered with 202)."""

    approval_id: str

    def response(self) -> dict[str, Any]:
        return {"status": "approval_pending", "approval_id": self.approval_id}


@dataclass(frozen=True, kw_only=True)
class Exchanged:
    credential: IssuedCredential = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class Attested:
    """A verified caller and its registered workload."""

    identity: Identity
    workload: dict[str, Any]


def approval_of(row: Mapping[str, Any]) -> Approval:
    return Approval(
        id=row["id"],
        workload_id=row["workload_id"],
        target_id=row["target_id"],
        policy_id=row["policy_id"],
        status=row["status"],
        created_at=parse_ts(row["created_at"]),
        decided_at=parse_ts(row["decided_at"]) if row.get("decided_at") else None,
        window_seconds=row["window_seconds"],
    )


def approval_view(row: Mapping[str, Any]) -> dict[str, Any]:
    view = dict(row)
    if row.get("status") == "approved" and row.get("decided_at"):
        view["expires_at"] = format_ts(parse_ts(row["decided_at"]) + row["window_seconds"])
    return view


class TokenExchange:
    """The domain service behind `POST /v1/token-exchange` and the proxy-facing routes."""

    def __init__(
        self,
        *,
        store: SqlExchange,
        registry: RegistryCache,
        attestor: Attestor,
        providers: Mapping[str, CredentialProvider],
        audit: AuditWriter,
        metrics: Metrics,
        clock: Clock,
        denials: DenialLog | None = None,
        rate_limit_per_minute: int = DEFAULT_EXCHANGE_RATE_LIMIT_PER_MINUTE,
        limiter: Limiter | None = None,
        approval_window_seconds: int = DEFAULT_APPROVAL_WINDOW_SECONDS,
        guard: ProviderGuard | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self._attestor = attestor
        self._providers = providers
        self._audit = audit
        self._denials = denials
        self._metrics = metrics
        self._clock = clock
        self._limiter = limiter or RateLimiter(limit=rate_limit_per_minute, clock=clock)
        self._approval_window = approval_window_seconds
        self._guard = guard or ProviderGuard(GuardSettings(), clock)

    # the caller ---------------------------------------------------------------------------------
    async def attest(self, subject_token: str, ctx: dict[str, Any] | None = None) -> Attested:
        """Verify the SA token and find its active workload (401 / 404 / 403)."""
        ctx = {} if ctx is None else ctx
        identity = await self._attestor.attest(subject_token)
        ctx["identity"] = identity
        workload = await self.registry.workload_for(
            cluster=identity.cluster, namespace=identity.namespace, service_account=identity.service_account
        )
        if workload is None:
            raise UnknownWorkload(
                f"no workload is registered for {identity.subject} in cluster {identity.cluster}"
            )
        ctx["workload_id"] = workload["id"]
        if workload.get("status") != "active":
            raise WorkloadRevoked(f"workload {workload['id']} is revoked")
        return Attested(identity=identity, workload=workload)

    # the exchange -------------------------------------------------------------------------------
    async def exchange(
        self, *, subject_token: str, audience: str, correlation_id: str | None, source: str = "unknown"
    ) -> Exchanged | ApprovalPending:
        """Run the pipeline; every outcome is audited (and counted) before this returns or raises."""
        ctx: dict[str, Any] = {"audience": audience, "source": source}
        try:
            result = await self._exchange(subject_token, audience, ctx)
        except SesameError as exc:
            await self.denied(exc.code, ctx, correlation_id, detail=getattr(exc, "reason", None))
            raise
        if isinstance(result, ApprovalPending):
            await self.denied("approval_pending", ctx, correlation_id, detail=None)
            return result
        credential = result.credential
        await self._audit.record(
            type="token.issued",
            actor=_actor(ctx),
            outcome="success",
            correlation_id=correlation_id,
            workload_id=ctx["workload_id"],
            target_service=ctx["target_name"],
            audience=audience,
            ttl_seconds=credential.expires_in,
            extra=_extra(ctx),
        )
        expires_at = self._clock.time() + credential.expires_in
        self._metrics.token_issued(ctx["target_name"], expires_at=expires_at)
        return result

    async def _exchange(
        self, subject_token: str, audience: str, ctx: dict[str, Any]
    ) -> Exchanged | ApprovalPending:
        attested = await self.attest(subject_token, ctx)
        workload_id = attested.workload["id"]
        await self._limiter.acquire(workload_id)
        target = await self.registry.target_by_audience(audience)
        if target is None:
            raise UnknownTarget(f"no target has the audience {audience!r}")
        ctx["target_id"], ctx["target_name"] = target["id"], target["name"]
        decision = await self._decide(workload_id, target["id"])
        if decision.rule is not None:
            ctx["policy_id"] = decision.rule.id
        if decision.outcome in ("approval_required", "approval_pending"):
            approval = decision.approval
            approval_id = (
                approval.id
                if approval is not None
                else await self._request_approval(workload_id, target["id"], decision, ctx)
            )
            ctx["approval_id"] = approval_id
            return ApprovalPending(approval_id=approval_id)
        if not decision.allowed:
            ctx["policy_reason"] = decision.reason
            raise PolicyDenied(f"no policy allows workload {workload_id} to use target {target['name']}")
        assert decision.rule is not None
        if decision.approval is not None:
            ctx["approval_id"] = decision.approval.id
        return Exchanged(credential=await self._mint(attested.identity, audience, decision.rule, ctx))

    async def _decide(self, workload_id: str, target_id: str) -> Decision:
        rules = await self.registry.rules_for(workload_id=workload_id, target_id=target_id)
        approvals: list[Approval] = []
        if any(r.effect == "require_approval" for r in rules):
            rows = await self.store.approvals_for(workload_id=workload_id, target_id=target_id)
            approvals = [approval_of(r) for r in rows]
        return evaluate(
            rules, workload_id=workload_id, target_id=target_id, approvals=approvals, now=self._clock.time()
        )

    async def _request_approval(
        self, workload_id: str, target_id: str, decision: Decision, ctx: dict[str, Any]
    ) -> str:
        assert decision.rule is not None
        identity: Identity = ctx["identity"]
        row, created = await self.store.request_approval(
            workload_id=workload_id,
            target_id=target_id,
            policy_id=decision.rule.id,
            window_seconds=self._approval_window,
            requested_by=identity.pod_name,
            now=format_ts(self._clock.time()),
        )
        if created:
            await self._audit.record(
                type="approval.requested",
                actor=_actor(ctx),
                outcome="success",
                workload_id=workload_id,
                target_service=ctx.get("target_name"),
                audience=ctx.get("audience"),
                extra={"approval_id": row["id"], "policy_id": decision.rule.id, **identity.audit_fields()},
            )
        return row["id"]

    async def _mint(
        self, identity: Identity, audience: str, rule: Rule, ctx: dict[str, Any]
    ) -> IssuedCredential:
        found = await self.registry.provider(rule.provider_id)
        if found is None:
            raise UpstreamMintFailed(f"policy {rule.id} names a credential provider that does not exist")
        record, secret = found.record, found.secret
        ctx["provider_id"] = record["id"]
        provider = self._providers.get(record.get("type", ""))
        if provider is None:
            raise UpstreamMintFailed(f"credential provider type {record.get('type')!r} is not supported")
        request = MintRequest(
            identity=identity,
            audience=audience,
            max_ttl_seconds=rule.max_ttl_seconds,
            provider_id=record["id"],
            config=record.get("config") or {},
            secret=secret,
            secret_version=record.get("updated_at", ""),
        )
        flight = getattr(provider, "flight_key", None)
        try:
            return await self._guard.call(
                record["id"], flight(request) if flight else None, lambda: provider.issue(request)
            )
        except SesameError:
            raise
        except Exception as exc:  # a provider bug must still be a named, audited failure
            raise UpstreamMintFailed(f"the credential provider failed ({type(exc).__name__})") from None

    async def denied(
        self, code: str, ctx: dict[str, Any], correlation_id: str | None, *, detail: str | None = None
    ) -> None:
        """Audit (and count) one `token.denied` event; `ctx` holds what the pipeline learnt so far."""
        if ctx.get("identity") is None and self._denials is not None:
            self._metrics.token_denied(code)
            await self._denials.record(
                type="token.denied",
                source=ctx.get("source", "unknown"),
                reason=code,
                detail=detail,
                route="/v1/token-exchange",
                correlation_id=correlation_id,
                audience=ctx.get("audience"),
            )
            return
        extra = _extra(ctx)
        if detail:
            extra["detail"] = detail
        if ctx.get("policy_reason"):
            extra["policy_reason"] = ctx["policy_reason"]
        await self._audit.record(
            type="token.denied",
            actor=_actor(ctx),
            outcome="denied",
            reason=code,
            correlation_id=correlation_id,
            workload_id=ctx.get("workload_id"),
            target_service=ctx.get("target_name"),
            audience=ctx.get("audience"),
            extra=extra,
        )
        self._metrics.token_denied(code)


def _actor(ctx: Mapping[str, Any]) -> str:
    if ctx.get("workload_id"):
        return f"workload:{ctx['workload_id']}"
    identity: Identity | None = ctx.get("identity")
    if identity is not None:
        return f"k8s:{identity.cluster}/{identity.namespace}/{identity.service_account}"
    return "anonymous"


def _extra(ctx: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    identity: Identity | None = ctx.get("identity")
    if identity is not None:
        out.update(identity.audit_fields())
    for key in ("target_id", "policy_id", "provider_id", "approval_id"):
        if ctx.get(key):
            out[key] = ctx[key]
    return out
