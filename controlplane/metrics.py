"""Prometheus metrics of one control plane app (its own registry, so apps in tests don't clash).

Token exchange calls `metrics.token_issued(target)` / `metrics.token_denied(reason)`.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
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

    def token_issued(self, target: str) -> None:
        self._child(self.tokens_issued, target).inc()

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
