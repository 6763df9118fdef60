"""Governed routes of this workload: which host:port gets which credential; polled from the control plane."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from proxy.controlplane_client import ControlPlaneClient
from proxy.errors import ProxyError
from proxy.http_grammar import TOKEN, has_ctl

__all__ = ["DEFAULT_REFRESH_SECONDS", "Injection", "Route", "RouteSync", "RouteTable"]

DEFAULT_REFRESH_SECONDS = 30
_MIN_REFRESH, _MAX_REFRESH = 1, 3600
_BACKOFF_START, _BACKOFF_MAX = 0.5, 30.0  # after a failed poll: 1 s, 2 s, 4 s … up to 30 s
_FIRST_LOAD_MAX = 2.0  # until the first table has loaded
log = logging.getLogger("sesame.proxy.routes")
_SCOPE_PART = re.compile(r"[a-z0-9-]{1,63}")

# How a route is reached: "http" for plaintext requests (absolute-form or Host header),
# "tls" for CONNECT / transparent TLS (SNI) that the proxy intercepts.
Kind = Literal["http", "tls"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Injection:
    type: Literal["bearer", "basic", "header", "query", "aws-sigv4"]
    name: str | None = None
    prefix: str | None = None
    region: str | None = None  # aws-sigv4: the signing scope, when the target fixes it
    service: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Route:
    target_id: str
    name: str
    host: str
    port: int
    scheme: Literal["http", "https"]
    tls: Literal["intercept", "originate", "none"]
    audience: str
    injection: Injection
    ca_pem: str | None = None

    @property
    def upstream_tls(self) -> bool:
        return self.scheme == "https"

    @classmethod
    def from_json(cls, raw: dict) -> Route:
        inj = raw.get("injection") or {}
        injection = Injection(type=inj["type"], name=inj.get("name"), prefix=inj.get("prefix"),
                              region=inj.get("region") or None, service=inj.get("service") or None)
        if injection.type in ("header", "query") and not injection.name:
            raise ValueError(f"injection {injection.type} needs a name")
        if injection.type not in ("bearer", "basic", "header", "query", "aws-sigv4"):
            raise ValueError(f"unknown injection type {injection.type!r}")
        if injection.name and TOKEN.fullmatch(injection.name.encode("latin-1", "replace")) is None:
            raise ValueError("injection name is not an HTTP field name (RFC 9110 token)")
        for scope_part in (injection.region, injection.service):
            if scope_part is not None and _SCOPE_PART.fullmatch(scope_part) is None:
                raise ValueError("aws-sigv4 region and service are lowercase letters, digits and '-'")
        if injection.prefix and has_ctl(injection.prefix):
            raise ValueError("injection prefix holds a control character")
        scheme = raw.get("scheme", "https")
        tls = raw.get("tls") or ("intercept" if scheme == "https" else "none")
        return cls(
            target_id=str(raw.get("target_id", "")),
            name=str(raw.get("name") or raw["host"]),
            host=str(raw["host"]).lower().rstrip("."),
            port=int(raw.get("port") or (443 if scheme == "https" else 80)),
            scheme=scheme,
            tls=tls,
            audience=str(raw["audience"]),
            injection=injection,
            ca_pem=raw.get("ca_pem"),
        )

    def keys(self) -> list[tuple[Kind, str, int]]:
        """Where the app reaches this route: an intercepted TLS port, a plaintext port, or both."""
        if self.scheme == "http":
            return [("http", self.host, self.port)]
        if self.tls == "originate":  # the app speaks http://host, the proxy speaks https://host:port
            return [("http", self.host, 80), ("http", self.host, self.port), ("tls", self.host, self.port)]
        return [("tls", self.host, self.port)]


class RouteTable:
    """An immutable index (kind, host, port) → Route; swapped whole on refresh."""

    __slots__ = ("_index", "_ports", "routes")

    def __init__(self, routes: list[Route] | None = None) -> None:
        self.routes = tuple(routes or ())
        self._index = {key: r for r in self.routes for key in r.keys()}
        self._ports = {(kind, port) for kind, _, port in self._index}

    def lookup(self, kind: Kind, host: str, port: int) -> Route | None:
        return self._index.get((kind, host, port))

    def has_port(self, kind: Kind, port: int) -> bool:
        """Some route is reached at `port` (an h2c connection's hosts are only known per stream)."""
        return (kind, port) in self._ports

    def __len__(self) -> int:
        return len(self.routes)


class RouteSync:
    """Keeps `table` current: polls GET /v1/proxy/routes with If-None-Match every refresh_seconds.

    On a failed poll the last good table stays in force (governed hosts never become ungoverned
    because the control plane is down).
    """

    def __init__(self, client: ControlPlaneClient) -> None:
        self.client = client
        self.table = RouteTable()
        self.loaded = asyncio.Event()
        self.refresh_seconds = DEFAULT_REFRESH_SECONDS
        self._etag: str | None = None
        self._task: asyncio.Task | None = None
        self.on_change: Callable[[RouteTable], None] | None = None  # e.g. sign the new hosts' leaves

    async def refresh(self) -> bool:
        """One poll; True when the table changed."""
        result = await self.client.get_routes(self._etag)
        if result is None:  # 304 Not Modified
            self.loaded.set()
            return False
        raw_routes, etag, refresh = result
        routes = []
        for raw in raw_routes:
            try:
                routes.append(Route.from_json(raw))
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("skipping malformed route", extra={"route": raw.get("name"), "reason": str(exc)})
        self.table = RouteTable(routes)
        if self.on_change is not None:
            self.on_change(self.table)
        self._etag = etag
        self.refresh_seconds = min(max(int(refresh or DEFAULT_REFRESH_SECONDS), _MIN_REFRESH), _MAX_REFRESH)
        self.loaded.set()
        log.info("routes loaded", extra={"routes": len(routes), "etag": etag})
        return True

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sesame-route-sync")

    async def _run(self) -> None:
        delay, failures = 0.0, 0
        while True:
            await asyncio.sleep(delay)
            try:
                await self.refresh()
                delay = self.refresh_seconds
            except Exception as exc:  # any reply, however broken, must not stop the refresh loop
                failures += 1
                # before the first table the proxy is not ready: keep trying every second or two
                ceiling = min(self.refresh_seconds, _BACKOFF_MAX) if self.loaded.is_set() else _FIRST_LOAD_MAX
                delay = min(_BACKOFF_START * 2 ** min(failures, 8), ceiling)
                code = exc.code if isinstance(exc, ProxyError) else type(exc).__name__
                log.warning("route refresh failed", extra={"error": code, "reason": str(exc)[:200]})
            else:
                failures = 0

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
