"""Prometheus metrics of one control plane app (its own registry, so apps in tests don't clash).

Token exchange calls `metrics.token_issued(target)` / `metrics.token_denied(reason)`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sesame_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sesame_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["route", "method"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.tokens_issued = Counter(
            "sesame_tokens_issued",
            "Credentials issued by token exchange, by target",
            ["target"],
            registry=self.registry,
        )
        self.tokens_denied = Counter(
            "sesame_tokens_denied",
            "Token exchange denials by reason code",
            ["reason"],
            registry=self.registry,
        )
        self.audit_events = Counter(
            "sesame_audit_events",
            "Audit events written, by type",
            ["type"],
            registry=self.registry,
        )
        self.unauthenticated_denials = Counter(
            "sesame_unauthenticated_denials",
            "Denials before authentication (bad keys and tokens, source limit), by audit type and reason",
            ["type", "reason"],
            registry=self.registry,
        )
        self.rate_limit_failures = Counter(
            "sesame_rate_limit_failures",
            "Shared rate-limit checks that failed, by limiter and outcome (fail_open, fail_closed)",
            ["limiter", "outcome"],
            registry=self.registry,
        )
        self.credential_expiry = Gauge(
            "sesame_credential_expiry_timestamp_seconds",
            "When the newest credential issued for each target expires (Unix time)",
            ["target"],
            registry=self.registry,
        )
        self.audit_lag_seconds = Histogram(
            "sesame_audit_lag_seconds",
            "From an audit event being recorded to its commit (queued events)",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        # Exported only once a verification ran (an unlabelled Gauge would read 0, "broken", at start).
        self._audit_chain: tuple[float, float] | None = None  # (valid 1/0, when)
        self.registry.register(_AuditChainCollector(self))
        self.proxies = Gauge(
            "sesame_proxies",
            "Sidecars by state: reporting (heartbeat in the last 5 min), silent (seen in 24 h, not in 5 min)",
            ["state"],
            registry=self.registry,
        )
        self.certificate_expiry = Gauge(
            "sesame_certificate_expiry_timestamp_seconds",
            "When the control plane's serving certificate expires (Unix time)",
            ["certificate"],
            registry=self.registry,
        )
        # labelled children by label values: `labels()` validates and locks on every call, and
        # these are counted on every request (label sets are bounded: route templates, codes).
        self._children: dict[tuple[Any, ...], Any] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = ("request", route, method, status)
        children = self._children.get(key)
        if children is None:
            children = (self.requests.labels(route, method, str(status)), self.latency.labels(route, method))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def token_issued(self, target: str, *, expires_at: float | None = None) -> None:
        self._child(self.tokens_issued, target).inc()
        if expires_at is not None:
            self._child(self.credential_expiry, target).set(expires_at)

    def audit_lag(self, seconds: float) -> None:
        self.audit_lag_seconds.observe(seconds)

    def audit_verified(self, ok: bool, at: float) -> None:
        self._audit_chain = (1.0 if ok else 0.0, at)

    def token_denied(self, reason: str) -> None:
        self._child(self.tokens_denied, reason).inc()

    def audit_written(self, type: str, count: int = 1) -> None:
        self._child(self.audit_events, type).inc(count)

    def unauthenticated_denial(self, type: str, reason: str) -> None:
        key = ("unauthenticated", type, reason)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.unauthenticated_denials.labels(type, reason)
        child.inc()

    def rate_limit_failed(self, limiter: str, outcome: str) -> None:
        self.rate_limit_failures.labels(limiter, outcome).inc()

    def _child(self, metric: Counter, value: str) -> Any:
        key = (metric, value)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(value)
        return child

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _AuditChainCollector:
    """The last audit chain verification's result and time, once one has run."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = self._metrics._audit_chain
        if state is None:
            return
        yield GaugeMetricFamily(
            "sesame_audit_chain_valid",
            "1 when the last audit chain verification passed, 0 when it found a break",
            value=state[0],
        )
        yield GaugeMetricFamily(
            "sesame_audit_chain_verified_timestamp_seconds",
            "When the audit chain was last verified (Unix time)",
            value=state[1],
        )
