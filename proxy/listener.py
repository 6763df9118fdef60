"""Accepting connections: explicit (absolute-form + CONNECT) and transparent (SO_ORIGINAL_DST, Host, SNI)."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
from collections.abc import Callable

from proxy.clienthello import is_tls, parse_sni, record_complete
from proxy.errors import ProxyError
from proxy.http1 import UNGOVERNED, Fixed, Forwarder, Transparent, split_authority
from proxy.metrics import Metrics
from proxy.pool import Destination, UpstreamPool
from proxy.reporter import Observations
from proxy.routes import Route, RouteTable
from proxy.tls import LeafCertificates
from proxy.wire import MAX_HEAD, error_response, tunnel

__all__ = ["DEFAULT_PEEK_TIMEOUT", "Listener", "original_dst"]

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h; IP6T_SO_ORIGINAL_DST has the same value
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
            raw = sock.getsockopt(socket.SOL_IPV6, SO_ORIGINAL_DST, 28)
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


async def _accepted_streams(
    sock: socket.socket, ctx: ssl.SSLContext | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_HEAD, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await loop.connect_accepted_socket(
        lambda: protocol, sock, ssl=ctx, ssl_handshake_timeout=_HANDSHAKE_TIMEOUT if ctx else None
    )
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
        metrics: Metrics,
        observations: Observations,
        peek_timeout: float = DEFAULT_PEEK_TIMEOUT,
    ) -> None:
        self.mode, self.listen = mode, listen
        self._forwarder, self._routes, self._leaves, self._pool = forwarder, routes, leaves, pool
        self._metrics, self._observe = metrics, observations.record
        self._peek_timeout = peek_timeout
        self._server: asyncio.Server | None = None
        self._sock: socket.socket | None = None
        self._accept_task: asyncio.Task | None = None
        self._conns: set[asyncio.Task] = set()
        self.address: tuple[str, int] = listen

    async def start(self) -> None:
        if self.mode == "explicit":
            self._server = await asyncio.start_server(
                self._explicit, self.listen[0], self.listen[1], limit=MAX_HEAD, reuse_address=True
            )
            self.address = self._server.sockets[0].getsockname()[:2]
            return
        family = socket.AF_INET6 if ":" in self.listen[0] else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(self.listen)
        self._sock.listen(1024)
        self._sock.setblocking(False)
        self.address = self._sock.getsockname()[:2]
        self._accept_task = asyncio.create_task(self._accept_loop(), name="sesame-accept")

    async def close(self, grace: float) -> None:
        """Stop accepting, let open connections finish for up to `grace` seconds, then cut them."""
        if self._server is not None:
            self._server.close()
        if self._accept_task is not None:
            self._accept_task.cancel()
            await asyncio.gather(self._accept_task, return_exceptions=True)
        if self._sock is not None:
            self._sock.close()
        if self._conns:
            _, pending = await asyncio.wait(set(self._conns), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _track(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
            task.add_done_callback(self._conns.discard)

    # explicit mode

    async def _explicit(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._track()
        self._metrics.connections.inc()
        try:
            req = await self._forwarder.serve(reader, writer, None)
            if req is not None:
                host, port = split_authority(req.target, 443)
                route = self._routes().lookup("tls", host, port)
                self._observe(host, port, route is not None)
                if route is None:
                    await self._tunnel(reader, writer, host, port, established=True)
                else:
                    await self._intercept_explicit(reader, writer, route, host)
        except (ConnectionError, OSError, asyncio.IncompleteReadError, ProxyError):
            pass
        finally:
            self._metrics.connections.dec()
            writer.close()

    async def _intercept_explicit(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, route: Route, host: str
    ) -> None:
        ctx = await self._leaves.context_for(route.host)
        # No await between the 200 and start_tls (which pauses reading first): the ClientHello
        # must reach the TLS layer, not the plaintext reader.
        writer.write(_ESTABLISHED)
        try:
            await writer.start_tls(ctx, ssl_handshake_timeout=_HANDSHAKE_TIMEOUT)
        except (ssl.SSLError, ConnectionError, TimeoutError, OSError):
            self._metrics.request(route.name, "client_tls_failed")
            return
        await self._forwarder.serve(
            reader, writer, Fixed(route, self._forwarder.route_destination(route, host))
        )

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

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._sock is not None
        while True:
            try:
                sock, _ = await loop.sock_accept(self._sock)
            except OSError as exc:
                log.warning("accept failed", extra={"reason": str(exc)})
                await asyncio.sleep(0.1)
                continue
            task = asyncio.create_task(self._transparent(sock), name="sesame-conn")
            self._conns.add(task)
            task.add_done_callback(self._conns.discard)

    async def _transparent(self, sock: socket.socket) -> None:
        self._metrics.connections.inc()
        writer = None
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
                    try:
                        reader, writer = await _accepted_streams(sock, ctx)
                    except (ssl.SSLError, ConnectionError, TimeoutError, OSError):
                        self._metrics.request(route.name, "client_tls_failed")
                        return
                    dest = self._forwarder.route_destination(route, ip)
                    await self._forwarder.serve(reader, writer, Fixed(route, dest))
                    return
            elif first.startswith(_HTTP_METHODS) and not first.startswith(b"CONNECT "):
                reader, writer = await _accepted_streams(sock)
                await self._forwarder.serve(reader, writer, Transparent(ip, port))
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
            else:
                sock.close()
