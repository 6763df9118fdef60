"""Accepting connections: explicit (absolute-form + CONNECT) and transparent (SO_ORIGINAL_DST, Host, SNI)."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
from collections.abc import Callable, Coroutine
from typing import Any

from proxy.clienthello import is_tls, parse_sni, record_complete
from proxy.errors import ProxyError
from proxy.fastpath import ClientConnection, SlowPath
from proxy.http1 import UNGOVERNED, Fixed, Forwarder, Origin, Transparent, split_authority
from proxy.metrics import Metrics
from proxy.pool import ConnectionPool, Destination, UpstreamPool
from proxy.reporter import Observations
from proxy.routes import Route, RouteTable
from proxy.tls import LeafCertificates
from proxy.wire import MAX_HEAD, error_response, tunnel

__all__ = ["DEFAULT_PEEK_TIMEOUT", "Listener", "original_dst"]

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h (SOL_IP)
IP6T_SO_ORIGINAL_DST = 80  # linux/netfilter_ipv6/ip6_tables.h, level SOL_IPV6 (= IPPROTO_IPV6)
DEFAULT_PEEK_TIMEOUT = 2.0  # a client silent this long is tunneled raw (server-speaks-first protocols)
_HANDSHAKE_TIMEOUT = 10.0
_MAX_PEEKS = 50
_ESTABLISHED = b"HTTP/1.1 200 Connection Established\r\n\r\n"
_HTTP_METHODS = (
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"TRACE ",
    b"CONNECT ",
)
log = logging.getLogger("sesame.proxy.listener")


def original_dst(sock: socket.socket) -> tuple[str, int] | None:
    """The pre-REDIRECT destination of an accepted socket, or None when it was not redirected."""
    try:
        if sock.family == socket.AF_INET6:
            raw = sock.getsockopt(socket.IPPROTO_IPV6, IP6T_SO_ORIGINAL_DST, 28)  # struct sockaddr_in6
            return socket.inet_ntop(socket.AF_INET6, raw[8:24]), struct.unpack_from("!H", raw, 2)[0]
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), struct.unpack_from("!H", raw, 2)[0]
    except OSError:
        return None


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _peek(sock: socket.socket, wait: float) -> bytes:
    """The client's first bytes (a whole TLS record when it is TLS), left unread in the socket."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    data = b""
    for _ in range(_MAX_PEEKS):
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_reader(sock.fileno(), _wake, ready)
        try:
            async with asyncio.timeout_at(deadline):
                await ready
        except TimeoutError:
            return data
        finally:
            loop.remove_reader(sock.fileno())
        data = sock.recv(MAX_HEAD, socket.MSG_PEEK)
        if not data or not is_tls(data) or record_complete(data):
            return data
        await asyncio.sleep(0.005)  # a ClientHello split across segments: wait for the rest
    return data


async def _accepted_streams(sock: socket.socket) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_HEAD, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


class Listener:
    """Owns the proxy port: accepts, classifies each connection, and hands requests to the Forwarder."""

    def __init__(
        self,
        *,
        mode: str,
        listen: tuple[str, int],
        forwarder: Forwarder,
        routes: Callable[[], RouteTable],
        leaves: LeafCertificates,
        pool: UpstreamPool,
        connections: ConnectionPool,
        metrics: Metrics,
        observations: Observations,
        peek_timeout: float = DEFAULT_PEEK_TIMEOUT,
        listen6: tuple[str, int] | None = None,
        listen6_required: bool = False,
    ) -> None:
        self.mode, self.listen = mode, listen
        self.listen6, self._listen6_required = listen6, listen6_required
        self._forwarder, self._routes, self._leaves, self._pool = forwarder, routes, leaves, pool
        self._connections = connections
        self._metrics, self._observe = metrics, observations.record
        self._peek_timeout = peek_timeout
        self._server: asyncio.Server | None = None
        self._socks: list[socket.socket] = []
        self._accept_tasks: list[asyncio.Task] = []
        self._conns: set[asyncio.Task] = set()  # slow-path connections and connects in flight
        self._fast: set[ClientConnection] = set()
        self.address: tuple[str, int] = listen
        self.address6: tuple[str, int] | None = None  # transparent mode's IPv6 listener, when bound

    async def start(self) -> None:
        if self.mode == "explicit":
            self._server = await asyncio.get_running_loop().create_server(
                lambda: self._connection(None),
                self.listen[0],
                self.listen[1],
                reuse_address=True,
                backlog=1024,
            )
            self.address = self._server.sockets[0].getsockname()[:2]
            return
        self.address = self._bind(self.listen)
        if self.listen6 is not None:
            # Port 0 (``--listen6 auto`` with an ephemeral listen port): the IPv4 listener's port.
            host6, port6 = self.listen6[0], self.listen6[1] or self.address[1]
            try:
                self.address6 = self._bind((host6, port6))
            except OSError as exc:
                if self._listen6_required:
                    raise
                log.warning("no IPv6 listener", extra={"listen6": f"[{host6}]:{port6}", "reason": str(exc)})

    def _bind(self, address: tuple[str, int]) -> tuple[str, int]:
        """A non-blocking transparent-mode listening socket with its accept loop; its bound address."""
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(1024)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._socks.append(sock)
        self._accept_tasks.append(asyncio.create_task(self._accept_loop(sock), name="sesame-accept"))
        return sock.getsockname()[:2]

    async def close(self, grace: float) -> None:
        """Stop accepting, let open connections finish for up to `grace` seconds, then cut them."""
        loop = asyncio.get_running_loop()
        if self._server is not None:
            self._server.close()
        for task in self._accept_tasks:
            task.cancel()
        await asyncio.gather(*self._accept_tasks, return_exceptions=True)
        for sock in self._socks:
            sock.close()
        for conn in list(self._fast):
            conn.shutdown()
        deadline = loop.time() + grace
        for _ in range(int(grace / 0.02) + 2):  # bounded: until idle or the grace period ends
            if not (self._fast or self._conns) or loop.time() >= deadline:
                break
            if self._conns:
                await asyncio.wait(set(self._conns), timeout=0.02)
            else:
                await asyncio.sleep(0.02)
        for conn in list(self._fast):
            if conn.transport is not None:
                conn.transport.abort()
        pending = set(self._conns)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._conns.add(task)
        task.add_done_callback(self._conns.discard)

    def _connection(self, origin: Origin) -> ClientConnection:
        """A new client connection, served on the fast path until it needs the streams forwarder."""
        conn = ClientConnection(
            self._forwarder,
            self._connections,
            origin,
            slow_path=self._explicit if origin is None else self._slow_path(origin),
            spawn=self._spawn,
            on_close=self._fast.discard,
        )
        self._fast.add(conn)
        return conn

    def _slow_path(self, origin: Origin) -> SlowPath:
        async def serve(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, retried_401: bool = False
        ) -> None:
            try:
                await self._forwarder.serve(reader, writer, origin, retried_401=retried_401)
            except (ConnectionError, OSError, asyncio.IncompleteReadError, ProxyError):
                pass
            finally:
                writer.close()

        return serve

    # explicit mode

    async def _explicit(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, retried_401: bool = False
    ) -> None:
        """The slow path of an explicit-mode connection: general requests, then CONNECT if one comes."""
        handed_back = False
        try:
            req = await self._forwarder.serve(reader, writer, None, retried_401=retried_401)
            if req is not None:
                host, port = split_authority(req.target, 443)
                route = self._routes().lookup("tls", host, port)
                self._observe(host, port, route is not None)
                if route is None:
                    await self._tunnel(reader, writer, host, port, established=True)
                else:
                    handed_back = await self._intercept_explicit(reader, writer, route, host)
        except (ConnectionError, OSError, asyncio.IncompleteReadError, ProxyError):
            pass
        finally:
            if not handed_back:
                writer.close()

    async def _intercept_explicit(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, route: Route, host: str
    ) -> bool:
        """Terminate the app's TLS for a governed CONNECT; True when the connection went to the fast path."""
        ctx = await self._leaves.context_for(route.host)
        conn = self._connection(Fixed(route, self._forwarder.route_destination(route, host)))
        # No await between the 200 and start_tls (which pauses reading first): the ClientHello
        # must reach the TLS layer, not the plaintext reader.
        writer.write(_ESTABLISHED)
        try:
            transport = await asyncio.get_running_loop().start_tls(
                writer.transport, conn, ctx, server_side=True, ssl_handshake_timeout=_HANDSHAKE_TIMEOUT
            )
        except (ssl.SSLError, ConnectionError, TimeoutError, OSError):
            self._fast.discard(conn)
            self._metrics.request(route.name, "client_tls_failed")
            return False
        if transport is None:
            self._fast.discard(conn)
            return False
        conn.streams = writer  # StreamWriter.__del__ would close the socket under the TLS transport
        conn.connection_made(transport)  # from here on the fast path serves the decrypted requests
        return True

    async def _tunnel(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        host: str,
        port: int,
        *,
        established: bool,
    ) -> None:
        """Pass bytes through to host:port untouched (nothing decrypted, nothing injected)."""
        try:
            up = await self._pool.connect(Destination(host, port))
        except ProxyError as exc:
            self._metrics.request(UNGOVERNED, exc.code)
            if established:
                writer.write(error_response(exc, keep_alive=False))
            return
        if established:
            writer.write(_ESTABLISHED)
        self._metrics.request(UNGOVERNED, "tunneled")
        await tunnel((reader, writer), (up.reader, up.writer))

    # transparent mode

    async def _accept_loop(self, listening: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(listening)
            except OSError as exc:
                log.warning("accept failed", extra={"reason": str(exc)})
                await asyncio.sleep(0.1)
                continue
            task = asyncio.create_task(self._transparent(sock), name="sesame-conn")
            self._conns.add(task)
            task.add_done_callback(self._conns.discard)

    async def _transparent(self, sock: socket.socket) -> None:
        self._metrics.connections.inc()
        loop = asyncio.get_running_loop()
        writer = None
        owned = True  # until a transport owns the socket
        try:
            sock.setblocking(False)
            dst = original_dst(sock)
            if dst is None or dst == sock.getsockname()[:2]:
                self._metrics.request(UNGOVERNED, "not_redirected")  # a direct connection would loop
                sock.close()
                return
            ip, port = dst
            first = await _peek(sock, self._peek_timeout)
            if is_tls(first):
                sni = parse_sni(first)
                route = self._routes().lookup("tls", sni, port) if sni else None
                self._observe(sni or ip, port, route is not None)
                if route is not None:
                    ctx = await self._leaves.context_for(route.host)
                    origin: Origin = Fixed(route, self._forwarder.route_destination(route, ip))
                    try:
                        await loop.connect_accepted_socket(
                            lambda: self._connection(origin),
                            sock,
                            ssl=ctx,
                            ssl_handshake_timeout=_HANDSHAKE_TIMEOUT,
                        )
                    except (ssl.SSLError, ConnectionError, TimeoutError, OSError):
                        self._metrics.request(route.name, "client_tls_failed")
                        return
                    owned = False
                    return
            elif first.startswith(_HTTP_METHODS) and not first.startswith(b"CONNECT "):
                plain = Transparent(ip, port)
                await loop.connect_accepted_socket(lambda: self._connection(plain), sock)
                owned = False
                return
            else:
                self._observe(ip, port, False)
            reader, writer = await _accepted_streams(sock)
            await self._tunnel(reader, writer, ip, port, established=False)
        except (ConnectionError, OSError, asyncio.IncompleteReadError, ProxyError):
            pass
        finally:
            self._metrics.connections.dec()
            if writer is not None:
                writer.close()
            elif owned:
                sock.close()
