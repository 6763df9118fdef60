"""Prometheus metrics of one proxy process, rendered in the text exposition format by the admin listener.

A few plain counters instead of prometheus_client: importing it costs ~5 MB of RSS per pod (it pulls in
http.server and email), and its per-increment lock is measurable on the hot path. Single-threaded use
only (the event loop).
"""

from __future__ import annotations

import math

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    pairs = sorted(zip(names, values, strict=True))
    text = ",".join(f'{n}="{_escape(v)}"' for n, v in pairs)
    if extra:
        text = f"{text},{extra}" if text else extra
    return "{" + text + "}" if text else ""


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    return repr(float(value))


class Value:
    """One counter or gauge sample."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount


class _Histogram:
    __slots__ = ("bucket_counts", "buckets", "count", "sum")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.bucket_counts = [0] * len(buckets)
        self.count, self.sum = 0, 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.bucket_counts[i] += 1


class _Family:
    """A metric with labels; `labels(*values)` returns the (cached) child."""

    def __init__(self, name: str, help_: str, kind: str, labelnames: tuple[str, ...], buckets=()) -> None:
        self.name, self.help, self.kind, self.labelnames = name, help_, kind, labelnames
        self._buckets = (*buckets, math.inf) if kind == "histogram" else ()
        self.children: dict[tuple[str, ...], Value | _Histogram] = {}

    def labels(self, *values: str) -> Value | _Histogram:  # type: ignore[return]
        child = self.children.get(values)
        if child is None:
            child = _Histogram(self._buckets) if self.kind == "histogram" else Value()
            self.children[values] = child
        return child

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        for values, child in self.children.items():
            if isinstance(child, _Histogram):
                for bound, n in zip(child.buckets, child.bucket_counts, strict=True):
                    le = _labels(self.labelnames, values, f'le="{_number(bound)}"')
                    out.append(f"{self.name}_bucket{le} {_number(n)}")
                out.append(f"{self.name}_count{_labels(self.labelnames, values)} {_number(child.count)}")
                out.append(f"{self.name}_sum{_labels(self.labelnames, values)} {_number(child.sum)}")
            else:
                suffix = "_total" if self.kind == "counter" and not self.name.endswith("_total") else ""
                out.append(f"{self.name}{suffix}{_labels(self.labelnames, values)} {_number(child.value)}")
        return out


class Metrics:
    """Request outcomes per target, credential cache results, exchange latency, open connections."""

    def __init__(self) -> None:
        self.requests = _Family(
            "sesame_proxy_requests_total",
            "Requests and tunnels handled, by target (route name, or 'ungoverned') and outcome.",
            "counter",
            ("target", "outcome"),
        )
        self.cache = _Family(
            "sesame_proxy_credential_cache_total",
            "Credential cache lookups and refreshes: hit, miss, refresh, refresh_failed, stale, dropped.",
            "counter",
            ("result",),
        )
        self.exchange_seconds = _Family(
            "sesame_proxy_exchange_seconds",
            "Latency of token exchanges with the control plane, by result.",
            "histogram",
            ("result",),
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self._gauges = _Family(
            "sesame_proxy_open_connections", "Client connections currently open.", "gauge", ()
        )
        self.connections = self._gauges.labels()
        self._families = (self.requests, self.cache, self.exchange_seconds, self._gauges)
        self._request_children: dict[tuple[str, str], Value] = {}
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
            child = self._request_children[(target, outcome)] = self.requests.labels(target, outcome)  # type: ignore[assignment]
        child.value += 1  # type: ignore[union-attr]

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """The value of one counter or gauge sample (tests, debugging); None when never set."""
        for family in self._families:
            if family.name == name and family.kind != "histogram":
                child = family.children.get(tuple((labels or {})[n] for n in family.labelnames))
                return None if child is None else child.value  # type: ignore[union-attr]
        return None

    def render(self) -> bytes:
        lines: list[str] = []
        for family in self._families:
            lines.extend(family.render())
        return ("\n".join(lines) + "\n").encode()
