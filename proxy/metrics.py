"""Prometheus metrics of one proxy process, in their own registry (served by the admin listener)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]


class Metrics:
    """Request outcomes per target, credential cache results, exchange latency, open connections."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "sesame_proxy_requests_total",
            "Requests and tunnels handled, by target (route name, or 'ungoverned') and outcome.",
            ["target", "outcome"],
            registry=self.registry,
        )
        self.cache = Counter(
            "sesame_proxy_credential_cache_total",
            "Credential cache lookups and refreshes: hit, miss, refresh, refresh_failed, stale, dropped.",
            ["result"],
            registry=self.registry,
        )
        self.exchange_seconds = Histogram(
            "sesame_proxy_exchange_seconds",
            "Latency of token exchanges with the control plane, by result.",
            ["result"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.connections = Gauge(
            "sesame_proxy_open_connections", "Client connections currently open.", registry=self.registry
        )
        self._request_children: dict[tuple[str, str], Counter] = {}
        self.cache_hit = self.cache.labels("hit")
        self.cache_miss = self.cache.labels("miss")
        self.cache_refresh = self.cache.labels("refresh")
        self.cache_refresh_failed = self.cache.labels("refresh_failed")
        self.cache_stale = self.cache.labels("stale")
        self.cache_dropped = self.cache.labels("dropped")

    def request(self, target: str, outcome: str) -> None:
        """Count one request; label children are bound once per (target, outcome)."""
        child = self._request_children.get((target, outcome))
        if child is None:
            child = self._request_children[(target, outcome)] = self.requests.labels(target, outcome)
        child.inc()
