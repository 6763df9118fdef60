"""The request path: classify → credential → inject → forward on a pooled connection → stream back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from proxy.credentials import CredentialCache
from proxy.errors import (
    BadRequest,
    ClientTimeout,
    ProxyError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from proxy.inject import Injector, compile_injector
from proxy.metrics import Metrics
from proxy.pool import Destination, Upstream, UpstreamPool
from proxy.reporter import Observations
from proxy.routes import Route, RouteTable
from proxy.tls import UpstreamTLS
from proxy.wire import (
    Body,
    Request,
    Response,
    error_response,
    parse_request,
    parse_response,
    read_head,
    relay_body,
    serialize_head,
    tunnel,
)

__all__ = ["REPLAY_LIMIT", "UNGOVERNED", "Fixed", "Forwarder", "Transparent"]

REPLAY_LIMIT = 64 * 1024  # bodies up to this size are buffered so a 401 can be retried
UNGOVERNED = "ungoverned"
_MAX_ATTEMPTS = 3
log = logging.getLogger("sesame.proxy.http")


@dataclass(frozen=True, slots=True)
class Fixed:
    """An intercepted TLS connection: every request on it goes to one governed route."""

    route: Route
    dest: Destination


@dataclass(frozen=True, slots=True)
class Transparent:
    """A redirected plaintext connection: the route comes from the Host header and the original port."""

    ip: str
    port: int


Origin = Fixed | Transparent | None  # None: explicit proxy (absolute-form requests, CONNECT)


class _UpstreamClosed(UpstreamUnreachable):
    """A (possibly pooled) upstream connection closed before any response byte: safe to replay."""


def _retrieve(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()


def split_authority(authority: str, default_port: int) -> tuple[str, int]:
    host, port = authority, default_port
    if authority.startswith("["):
        end = authority.find("]")
        host, rest = authority[1:end], authority[end + 1 :]
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif authority.count(":") == 1:
        host, _, p = authority.partition(":")
        if not p.isdigit():
            raise BadRequest(f"invalid port in {authority!r}")
        port = int(p)
    return host.lower().rstrip("."), port


class Forwarder:
    """Serves HTTP/1.1 requests of one client connection and forwards them upstream."""

    def __init__(
        self,
        *,
        routes: Callable[[], RouteTable],
        credentials: CredentialCache,
        pool: UpstreamPool,
        upstream_tls: UpstreamTLS,
        metrics: Metrics,
        observations: Observations,
        response_timeout: float,
        client_idle_timeout: float,
        stream_idle_timeout: float,
    ) -> None:
        self._routes = routes
        self.credentials = credentials
        self._pool = pool
        self._tls = upstream_tls
        self.metrics = metrics
        self.observe = observations.record
        self.response_timeout = response_timeout
        self.client_idle_timeout = client_idle_timeout
        self.stream_idle_timeout = stream_idle_timeout
        # per-route steps, keyed by the route object's id (hashing a Route hashes all its fields)
        self._injectors: dict[int, tuple[Route, Injector]] = {}
        self._destinations: dict[tuple[int, str], tuple[Route, Destination]] = {}
        self._authorities: dict[tuple[str, int], tuple[str, int]] = {}

    async def serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        origin: Origin,
        *,
        retried_401: bool = False,
    ) -> Request | None:
        """Serve requests until the connection ends; a CONNECT request (explicit mode) is handed back.

        `retried_401`: the first request is a replay after an upstream 401 (no second replay)."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                # a timer handle per request is much cheaper than an asyncio.timeout() context
                idle = loop.call_later(self.client_idle_timeout, writer.transport.abort)
                try:
                    raw = await read_head(reader)
                finally:
                    idle.cancel()
                if raw is None:
                    return None
                req = parse_request(raw)
                if req.method == "CONNECT":
                    if origin is None:
                        return req
                    raise BadRequest("CONNECT inside an intercepted connection")
                route, dest, host, port = self.resolve(req, origin)
                self.observe(host, port, route is not None)
                if not await self._forward(req, reader, writer, route, dest, retried_401=retried_401):
                    return None
                retried_401 = False
        except BadRequest as exc:
            self.metrics.request(UNGOVERNED, exc.code)
            writer.write(error_response(exc, keep_alive=False))
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        return None

    def route_destination(self, route: Route, dial_host: str) -> Destination:
        entry = self._destinations.get((id(route), dial_host))
        if entry is not None and entry[0] is route:
            return entry[1]
        if len(self._destinations) > 4096:  # routes were replaced many times: start over
            self._destinations.clear()
        if route.upstream_tls:
            dest = Destination(dial_host, route.port, self._tls.context(route.ca_pem), route.host)
        else:
            dest = Destination(dial_host, route.port)
        self._destinations[(id(route), dial_host)] = (route, dest)
        return dest

    def resolve(self, req: Request, origin: Origin) -> tuple[Route | None, Destination, str, int]:
        if isinstance(origin, Fixed):
            return origin.route, origin.dest, origin.route.host, origin.dest.port
        if origin is None:
            if not req.target.startswith("http://"):
                raise BadRequest("an explicit proxy needs absolute http:// URLs; use CONNECT for https")
            rest = req.target[7:]
            cut = rest.find("/")
            query = rest.find("?", 0, cut if cut >= 0 else len(rest))
            if query >= 0 or cut < 0:
                cut = query if query >= 0 else len(rest)
                req.target = "/" + rest[cut:]
            else:
                req.target = rest[cut:]
            host, port = self._authority(rest[:cut], 80)
            dial = host
        else:
            hostval = next((v for n, v in req.headers if n.lower() == "host"), "")
            host, _ = self._authority(hostval, origin.port)
            port, dial = origin.port, origin.ip
        route = self._routes().lookup("http", host, port)
        if route is None:
            return None, Destination(dial, port), host, port
        return route, self.route_destination(route, dial), host, port

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

    def injector(self, route: Route) -> Injector:
        entry = self._injectors.get(id(route))
        if entry is not None and entry[0] is route:
            return entry[1]
        if len(self._injectors) > 4096:
            self._injectors.clear()
        inject = compile_injector(route.injection)
        self._injectors[id(route)] = (route, inject)
        return inject

    async def _forward(
        self,
        req: Request,
        creader: asyncio.StreamReader,
        cwriter: asyncio.StreamWriter,
        route: Route | None,
        dest: Destination,
        *,
        retried_401: bool = False,
    ) -> bool:
        """Forward one request and stream its response; True when the client connection stays open."""
        target = route.name if route is not None else UNGOVERNED
        headers, cred, inject = req.headers, None, None
        if route is not None:
            inject = self.injector(route)
            try:
                cred = await self.credentials.get(route.audience)
            except ProxyError as exc:
                return await self._fail(req, cwriter, target, exc, body_read=req.body == Body.NONE)
            req.target = inject(headers, req.target, cred.token)
        body, stream_body = b"", req.body != Body.NONE
        if stream_body and route is not None and req.body == Body.LENGTH and req.length <= REPLAY_LIMIT:
            if not req.expect_continue:
                body, stream_body = await creader.readexactly(req.length), False
        extra = f"Connection: upgrade\r\nUpgrade: {req.upgrade}\r\n" if req.upgrade else ""
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            try:
                conn, reused = await self._pool.acquire(dest)
            except ProxyError as exc:
                return await self._fail(req, cwriter, target, exc, body_read=not stream_body)
            conn.writer.write(serialize_head(f"{req.method} {req.target} HTTP/1.1", headers, extra) + body)
            pump = None
            if stream_body:
                pump = asyncio.create_task(self._pump(req, creader, conn), name="sesame-request-body")
                pump.add_done_callback(_retrieve)
            try:
                resp = await self._response_head(req, conn, cwriter, pump)
            except ProxyError:
                conn.close()
                if pump is not None:
                    if pump.done() and not pump.cancelled() and isinstance(pump.exception(), ClientTimeout):
                        exc = pump.exception()  # type: ignore[assignment]  # the app stalled, not the upstream
                    pump.cancel()
                if (
                    isinstance(exc, _UpstreamClosed)
                    and reused
                    and not stream_body
                    and attempt < _MAX_ATTEMPTS
                ):
                    continue
                return await self._fail(req, cwriter, target, exc, body_read=pump is None)
            if (
                resp.status == 401
                and cred is not None
                and inject is not None
                and not stream_body
                and not retried_401
            ):
                conn.close()  # drop the credential the upstream rejected; fetch a new one; replay once
                retried_401 = True
                self.credentials.drop(route.audience, cred.token)  # type: ignore[union-attr]
                try:
                    cred = await self.credentials.get(route.audience)  # type: ignore[union-attr]
                except ProxyError as exc:
                    return await self._fail(req, cwriter, target, exc, body_read=True)
                req.target = inject(headers, req.target, cred.token)
                continue
            return await self._respond(req, resp, creader, cwriter, conn, pump, target)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _pump(self, req: Request, creader: asyncio.StreamReader, conn: Upstream) -> None:
        """Stream the request body upstream while the response head is awaited (100-continue)."""
        try:
            await relay_body(req.body, req.length, creader, conn.writer, idle=self.stream_idle_timeout)
        except TimeoutError as exc:
            conn.close()
            raise ClientTimeout(
                f"the request body stalled for {self.stream_idle_timeout:g}s; the connection was closed"
            ) from exc
        except BaseException:
            conn.close()
            raise

    async def _response_head(
        self, req: Request, conn: Upstream, cwriter: asyncio.StreamWriter, pump: asyncio.Task | None
    ) -> Response:
        """The final response head (interim 1xx heads are relayed); timed from the end of the body."""
        loop = asyncio.get_running_loop()
        expired = False
        timer: asyncio.TimerHandle | None = None

        def expire() -> None:
            nonlocal expired
            expired = True
            conn.close()

        def arm(_task: object = None) -> None:
            nonlocal timer
            timer = loop.call_later(self.response_timeout, expire)

        if pump is None:
            arm()
        else:
            pump.add_done_callback(arm)
        try:
            while True:
                raw = await read_head(conn.reader, UpstreamProtocolError)
                if raw is None:
                    raise ConnectionResetError("closed")
                resp = parse_response(raw, req.method)
                if resp.status >= 200 or resp.status == 101:
                    return resp
                if req.version == "HTTP/1.1":
                    cwriter.write(raw)
        except (ConnectionError, OSError, UpstreamProtocolError) as exc:
            if expired:
                raise UpstreamTimeout(
                    f"no response from the upstream within {self.response_timeout:g}s"
                ) from exc
            if isinstance(exc, UpstreamProtocolError):
                raise
            raise _UpstreamClosed(f"the upstream closed the connection without a response ({exc})") from exc
        finally:
            if timer is not None:
                timer.cancel()
            if pump is not None:
                pump.remove_done_callback(arm)

    async def _respond(
        self,
        req: Request,
        resp: Response,
        creader: asyncio.StreamReader,
        cwriter: asyncio.StreamWriter,
        conn: Upstream,
        pump: asyncio.Task | None,
        target: str,
    ) -> bool:
        if resp.status == 101 and req.upgrade:
            cwriter.write(
                serialize_head(
                    f"HTTP/1.1 101 {resp.reason}",
                    resp.headers,
                    f"Connection: upgrade\r\nUpgrade: {resp.upgrade}\r\n",
                )
            )
            self.metrics.request(target, "upgraded")
            await tunnel((creader, cwriter), (conn.reader, conn.writer))
            return False
        client_keep = req.keep_alive and resp.body != Body.CLOSE
        close = "" if client_keep else "Connection: close\r\n"
        head = serialize_head(f"HTTP/1.1 {resp.status} {resp.reason}", resp.headers, close)
        try:
            await relay_body(
                resp.body, resp.length, conn.reader, cwriter, head, idle=self.stream_idle_timeout
            )
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ProxyError, OSError) as exc:
            conn.close()
            if pump is not None:
                pump.cancel()
            # TimeoutError: the upstream stopped sending, or the app stopped reading
            outcome = "stream_idle_timeout" if isinstance(exc, TimeoutError) else "response_interrupted"
            self.metrics.request(target, outcome)
            return False
        upstream_keep = resp.keep_alive and resp.body != Body.CLOSE
        if pump is not None and (not pump.done() or pump.cancelled() or pump.exception() is not None):
            pump.cancel()  # the upstream answered before the whole body arrived: neither side is reusable
            client_keep = upstream_keep = False
        if upstream_keep:
            self._pool.release(conn)
        else:
            conn.close()
        self.metrics.request(target, "forwarded")
        return client_keep

    async def resume(
        self,
        req: Request,
        conn: Upstream,
        creader: asyncio.StreamReader,
        cwriter: asyncio.StreamWriter,
        target: str,
    ) -> bool:
        """Finish an exchange the fast path started (request sent; the response needs streams)."""
        try:
            resp = await self._response_head(req, conn, cwriter, None)
        except ProxyError as exc:
            conn.close()
            return await self._fail(req, cwriter, target, exc, body_read=True)
        return await self._respond(req, resp, creader, cwriter, conn, None, target)

    async def _fail(
        self, req: Request, cwriter: asyncio.StreamWriter, target: str, exc: ProxyError, *, body_read: bool
    ) -> bool:
        """Answer with the error's JSON; the connection stays open only if the request was fully read."""
        keep = req.keep_alive and body_read
        cwriter.write(self.error_reply(exc, target, keep_alive=keep))
        await cwriter.drain()
        return keep

    def error_reply(self, exc: ProxyError, target: str, *, keep_alive: bool) -> bytes:
        """Count and log a failed request; the JSON error response for the app (both paths)."""
        self.metrics.request(target, exc.code)
        log.info("request failed", extra={"target": target, "error": exc.code, "reason": exc.message})
        return error_response(exc, keep_alive=keep_alive)
