"""Accepting connections: explicit (absolute-form + CONNECT) and transparent (SO_ORIGINAL_DST, Host, SNI)."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct

from proxy.clienthello import is_tls, parse_sni, record_complete
from proxy.connection_limits import ConnectionLimiter
from proxy.engine import ClientConnection, Engine
from proxy.errors import ProxyError
from proxy.exchange import UNGOVERNED, Intercepted, Origin, Redirected
from proxy.http_messages import MAX_HEAD
from proxy.pool import Destination
from proxy.relay import Relay
from proxy.tasks import Tasks

__all__ = ["DEFAULT_PEEK_TIMEOUT", "Listener", "original_dst"]

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h (SOL_IP)
IP6T_SO_ORIGINAL_DST = 80  # linux/netfilter_ipv6/ip6_tables.h, level SOL_IPV6 (= IPPROTO_IPV6)
DEFAULT_PEEK_TIMEOUT = 2.0  # a client silent this long is tunneled raw (server-speaks-first protocols)
_HANDSHAKE_TIMEOUT = 10.0
_MAX_PEEKS = 50
_H2C_PREFACE = b"PRI * HTTP/2.0\r\n"
_HTTP_METHODS = (b"GET ", b"POST ", b"PUT ", b"DELETE ", b"HEAD ", b"OPTIONS ", b"PATCH ", b"TRACE ")
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


class Listener:
    """Owns the proxy port(s): accepts, classifies each connection, and starts its ClientConnection."""

    def __init__(
        self,
        *,
        mode: str,
        listen: tuple[str, int],
        engine: Engine,
        limiter: ConnectionLimiter,
        tasks: Tasks,
        peek_timeout: float = DEFAULT_PEEK_TIMEOUT,
        listen6: tuple[str, int] | None = None,
        listen6_required: bool = False,
    ) -> None:
        self.mode, self.listen = mode, listen
        self.listen6, self._listen6_required = listen6, listen6_required
        self.engine, self.limiter, self._tasks = engine, limiter, tasks
        self._peek_timeout = peek_timeout
        self._server: asyncio.Server | None = None
        self._socks: list[socket.socket] = []
        self._accept_tasks: list[asyncio.Task] = []
        self.address: tuple[str, int] = listen
        self.address6: tuple[str, int] | None = None  # transparent mode's IPv6 listener, when bound

    async def start(self) -> None:
        if self.mode == "explicit":
            self._server = await asyncio.get_running_loop().create_server(
                lambda: ClientConnection(self.engine, None),
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
        for conn in self.limiter.connections():
            conn.shutdown()  # type: ignore[attr-defined]
        deadline = loop.time() + grace
        for _ in range(int(grace / 0.02) + 2):  # bounded: until idle or the grace period ends
            if not (len(self.limiter) or self._tasks) or loop.time() >= deadline:
                break
            await asyncio.sleep(0.02)
        for conn in self.limiter.connections():
            if conn.transport is not None:
                conn.transport.abort()  # type: ignore[attr-defined]
        await self._tasks.cancel()

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
            self._tasks.spawn(self._transparent(sock))

    async def _transparent(self, sock: socket.socket) -> None:
        """Classify a redirected connection by its first bytes: governed TLS, plain HTTP, or a tunnel."""
        loop = asyncio.get_running_loop()
        engine = self.engine
        try:
            sock.setblocking(False)
            dst = original_dst(sock)
            if dst is None or dst == sock.getsockname()[:2]:
                engine.metrics.request(UNGOVERNED, "not_redirected")  # a direct connection would loop
                sock.close()
                return
            ip, port = dst
            first = await _peek(sock, self._peek_timeout)
            origin: Origin
            if is_tls(first):
                sni = parse_sni(first)
                route = engine.routes().lookup("tls", sni, port) if sni else None
                engine.observe(sni or ip, port, route is not None)
                if route is not None:
                    ctx = await engine.leaves.context_for(route.host)
                    origin = Intercepted(route, port)
                    try:
                        await loop.connect_accepted_socket(
                            lambda: ClientConnection(engine, origin),
                            sock,
                            ssl=ctx,
                            ssl_handshake_timeout=_HANDSHAKE_TIMEOUT,
                        )
                    except (ssl.SSLError, ConnectionError, TimeoutError, OSError):
                        engine.metrics.request(route.name, "client_tls_failed")
                    return
            elif first.startswith(_HTTP_METHODS) or (
                first.startswith(_H2C_PREFACE) and engine.routes().has_port("http", port)
            ):  # plaintext HTTP/1.1, or h2c with prior knowledge to a port a plaintext route uses
                origin = Redirected(ip, port)
                await loop.connect_accepted_socket(lambda: ClientConnection(engine, origin), sock)
                return
            else:
                engine.observe(ip, port, False)
            await self._tunnel(sock, ip, port)
        except (ConnectionError, OSError):
            sock.close()

    async def _tunnel(self, sock: socket.socket, ip: str, port: int) -> None:
        """Pass bytes through to the original destination untouched (nothing decrypted or injected)."""
        relay = Relay()
        try:
            await self.engine.pool.connect(Destination(ip, port), lambda: relay.upstream)  # type: ignore[arg-type,return-value]
        except ProxyError as exc:
            self.engine.metrics.request(UNGOVERNED, exc.code)
            sock.close()
            return
        self.engine.metrics.request(UNGOVERNED, "tunneled")
        await asyncio.get_running_loop().connect_accepted_socket(lambda: relay.client, sock)
