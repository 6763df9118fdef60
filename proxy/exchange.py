"""What to do with one request, whatever its framing: route, destination, credential, injection.

This is the proxy's security core, shared by every framing (HTTP/1.1 today, HTTP/2 next). The
destination rule (docs/proxy.md): a credential is only ever written to a connection the proxy itself
opened to the route's own host and port, resolved by the proxy and, for TLS, verified against the
route's trust. What the app controls (the Host field, the original destination, the SNI) picks the
route; it never picks where the credential goes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from proxy.errors import BadRequest, MisdirectedRequest
from proxy.http_messages import Request, split_authority
from proxy.inject import Injector, compile_injector
from proxy.pool import Destination
from proxy.routes import Route, RouteTable
from proxy.tls import UpstreamTLS

if TYPE_CHECKING:
    from proxy.sigv4 import Signer

__all__ = ["UNGOVERNED", "Exchanges", "Intercepted", "Origin", "Plan", "Redirected"]

UNGOVERNED = "ungoverned"
_CACHE_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class Intercepted:
    """A TLS connection the proxy terminated for a governed route (CONNECT or SNI): `port` is the
    port the app asked for; every request on it must name the route's host."""

    route: Route
    port: int


@dataclass(frozen=True, slots=True)
class Redirected:
    """A plaintext connection REDIRECTed to the proxy (transparent mode): its original destination."""

    ip: str
    port: int


Origin = Intercepted | Redirected | None  # None: explicit proxy (absolute-form requests, CONNECT)


@dataclass(frozen=True, slots=True)
class _RouteSteps:
    """What a route needs per request, built once per route: where to dial, what Host, how to inject."""

    dest: Destination
    dest_h2: Destination  # the same, offering h2 before http/1.1 in ALPN (proxy/h2_engine.py)
    host_field: str
    inject: Injector | None
    sign: Signer | None = None  # aws-sigv4 routes: the request is signed, not given a header


class Plan:
    """One request's decision: the route (None: ungoverned), where to dial, and the target to send."""

    __slots__ = ("dest", "host", "inject", "port", "route", "sign", "target")

    def __init__(self, route: Route | None, dest: Destination, host: str, port: int,
                 inject: Injector | None, sign: Signer | None = None) -> None:
        self.route, self.dest, self.host, self.port, self.inject = route, dest, host, port, inject
        self.sign = sign
        self.target = route.name if route is not None else UNGOVERNED

    @property
    def signs_body(self) -> bool:
        """The credential goes into a signature over the request (SigV4): `apply` waits for `body`."""
        return self.sign is not None

    def apply(self, req: Request, token: str, body: bytes | None = None) -> None:
        """Write the credential into `req` (headers and, for query injection, the target; for
        aws-sigv4 a fresh signature over the request and `body`, None while it streams). The token
        was checked for control characters when it entered the cache (proxy/credentials.py)."""
        if self.sign is not None:
            self.sign(req, token, body)
            return
        req.target = self.inject(req.headers, req.target, token)  # type: ignore[misc]


class Exchanges:
    """Turns a parsed request and its connection's origin into a Plan (the destination rule)."""

    def __init__(self, routes: Callable[[], RouteTable], upstream_tls: UpstreamTLS) -> None:
        self._routes = routes
        self._tls = upstream_tls
        self._steps: dict[int, tuple[Route, _RouteSteps]] = {}  # keyed by id(route): routes are swapped whole
        self._authorities: dict[tuple[str, int], tuple[str, int]] = {}

    def steps(self, route: Route) -> _RouteSteps:
        entry = self._steps.get(id(route))
        if entry is not None and entry[0] is route:
            return entry[1]
        if len(self._steps) > _CACHE_LIMIT:
            self._steps.clear()
        if route.upstream_tls:
            tls, tls_h2 = self._tls.context(route.ca_pem), self._tls.context(route.ca_pem, h2=True)
            dest = Destination(route.host, route.port, tls, route.host)
            dest_h2 = Destination(route.host, route.port, tls_h2, route.host)
        else:
            dest = dest_h2 = Destination(route.host, route.port)
        default = 443 if route.upstream_tls else 80
        host = f"[{route.host}]" if ":" in route.host else route.host
        host_field = host if route.port == default else f"{host}:{route.port}"
        injection = route.injection
        if injection.type == "aws-sigv4":  # loaded only in pods with an AWS route
            from proxy.sigv4 import compile_signer

            signer = compile_signer(route.host, region=injection.region, service=injection.service)
            steps = _RouteSteps(dest, dest_h2, host_field, None, signer)
        else:
            steps = _RouteSteps(dest, dest_h2, host_field, compile_injector(injection))
        self._steps[id(route)] = (route, steps)
        return steps

    def _authority(self, authority: str, default_port: int) -> tuple[str, int]:
        """split_authority, memoised: apps call the same few hosts over and over."""
        key = (authority, default_port)
        found = self._authorities.get(key)
        if found is None:
            found = split_authority(authority, default_port)
            if len(self._authorities) >= 1024:
                self._authorities.clear()
            self._authorities[key] = found
        return found

    def plan(self, req: Request, origin: Origin) -> Plan:
        """Route `req` and fix where it goes; rewrites its target and Host as the rule requires."""
        if isinstance(origin, Intercepted):
            return self._intercepted(req, origin)
        if origin is None:
            return self._absolute(req)
        host, _ = self._authority(req.host, origin.port) if req.host else (origin.ip, origin.port)
        port = origin.port
        route = self._routes().lookup("http", host, port)
        if route is None:  # untouched: to the address the app dialled
            return Plan(None, Destination(origin.ip, port), host, port, None)
        return self._governed(req, route, host, port)

    def _governed(self, req: Request, route: Route, host: str, port: int) -> Plan:
        steps = self.steps(route)
        _set_host(req, steps.host_field)
        return Plan(route, steps.dest, host, port, steps.inject, steps.sign)

    def _intercepted(self, req: Request, origin: Intercepted) -> Plan:
        route = origin.route
        target = req.target
        if not target.startswith("/") and target != "*":
            if not target.lower().startswith("https://"):
                raise BadRequest("an intercepted HTTPS request needs an origin-form or https:// target")
            authority, path = _split_url(target[8:])
            host, port = self._authority(authority, 443)
            if host != route.host or port != origin.port:
                raise MisdirectedRequest(f"the request names {authority!r}, not this connection's host")
            req.target = path
        if req.host:
            host, port = self._authority(req.host, origin.port)
            if host != route.host or port != origin.port:
                raise MisdirectedRequest(
                    f"Host {req.host!r} names another authority than this connection's ({route.host})"
                )
        return self._governed(req, route, route.host, origin.port)

    def _absolute(self, req: Request) -> Plan:
        if not req.target.lower().startswith("http://"):
            raise BadRequest("an explicit proxy needs absolute http:// URLs; use CONNECT for https")
        authority, req.target = _split_url(req.target[7:])
        host, port = self._authority(authority, 80)
        route = self._routes().lookup("http", host, port)
        if route is not None:
            return self._governed(req, route, host, port)
        _set_host(req, authority)  # RFC 9112 §3.2.2: the target's authority replaces Host
        return Plan(None, Destination(host, port), host, port, None)


def _split_url(rest: str) -> tuple[str, str]:
    """`authority/path?query` (after the scheme) → (authority, origin-form target)."""
    cut = len(rest)
    for sep in "/?#":
        i = rest.find(sep)
        if 0 <= i < cut:
            cut = i
    path = rest[cut:].split("#", 1)[0]
    if not path.startswith("/"):
        path = "/" + path
    return rest[:cut], path


def _set_host(req: Request, value: str) -> None:
    """Replace the request's Host field (or add it first when there was none)."""
    req.host = value
    headers = req.headers
    for i, (name, _) in enumerate(headers):
        if len(name) == 4 and name.lower() == "host":
            headers[i] = (name, value)
            return
    headers.insert(0, ("Host", value))
