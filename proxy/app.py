"""The running proxy: wires settings into routes, credentials, TLS, listener, admin and reports."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from proxy.admin import AdminServer
from proxy.config import ProxySettings
from proxy.connection_limits import ConnectionLimiter, default_max_connections, raise_fd_limit
from proxy.controlplane_client import ControlPlaneClient, ReloadingTrust
from proxy.credentials import CredentialCache
from proxy.engine import Engine, Timeouts
from proxy.exchange import Exchanges
from proxy.identity import TokenFile
from proxy.listener import Listener
from proxy.metrics import Metrics
from proxy.pool import ConnectionPool
from proxy.reporter import Observations, Reporter
from proxy.routes import RouteSync, RouteTable
from proxy.tasks import Tasks
from proxy.tls import LeafCertificates, UpstreamTLS, client_context

__all__ = ["WORKER_THREADS", "Proxy", "run"]

# Threads for blocking work off the event loop: loading the pod CA and signing leaf certificates.
# A burst of new governed hosts queues here instead of starting a thread (and malloc arena) per host.
WORKER_THREADS = 2

log = logging.getLogger("sesame.proxy")


def _control_plane_trust(settings: ProxySettings) -> dict[str, object]:
    """How the proxy verifies an https:// control plane: a CA given as a file is re-read when it
    changes (a mounted ConfigMap follows a CA rollover, docs/kubernetes.md); PEM text is fixed."""
    if not settings.control_plane.startswith("https"):
        return {}
    ca = settings.control_plane_ca
    if ca and not ca.lstrip().startswith("-----BEGIN") and Path(ca).is_file():
        return {"trust": ReloadingTrust(Path(ca), client_context)}
    return {"ssl_context": client_context(ca)}


def intercepted_hosts(table: RouteTable) -> list[str]:
    """The hosts whose TLS the proxy terminates: their leaves are signed before the first request."""
    return [route.host for route in table.routes if any(kind == "tls" for kind, _, _ in route.keys())]


class Proxy:
    """One proxy process's components; `start` binds the ports, `close` drains and releases them."""

    def __init__(self, settings: ProxySettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.token = TokenFile(settings.token_file)
        self.client = ControlPlaneClient(settings.control_plane, self.token, **_control_plane_trust(settings))
        self.routes = RouteSync(self.client)
        self.credentials = CredentialCache(
            self.client.exchange,
            self.metrics,
            clock=clock,
            refresh_fraction=settings.refresh_fraction,
            jitter=settings.refresh_jitter,
        )
        self.observations = Observations()
        self.reporter = Reporter(
            self.client,
            self.observations,
            pod=settings.pod_name,
            version=settings.version,
            heartbeat_interval=settings.heartbeat_interval,
            observations_interval=settings.observations_interval,
        )
        self.connections = ConnectionPool(
            connect_timeout=settings.connect_timeout, idle_timeout=settings.upstream_idle_timeout
        )
        self.quit = asyncio.Event()
        self.listener: Listener | None = None
        self.admin: AdminServer | None = None

    async def start(self) -> None:
        leaves = LeafCertificates(self.settings.ca_dir)
        await leaves.ensure_ca()  # the init container made it; created here when the proxy runs alone
        upstream_tls = await asyncio.to_thread(UpstreamTLS, self.settings.upstream_ca_file)
        nofile = raise_fd_limit()
        limiter = ConnectionLimiter(
            self.settings.max_connections or default_max_connections(nofile), self.metrics.connections
        )
        tasks = Tasks()
        engine = Engine(
            exchanges=Exchanges(lambda: self.routes.table, upstream_tls),
            routes=lambda: self.routes.table,
            credentials=self.credentials,
            pool=self.connections,
            leaves=leaves,
            metrics=self.metrics,
            observe=self.observations.record,
            timeouts=Timeouts(
                header=self.settings.header_timeout,
                idle=self.settings.client_idle_timeout,
                response=self.settings.response_timeout,
                stream=self.settings.stream_idle_timeout,
            ),
            spawn=tasks.spawn,
            track=limiter.track,
        )
        self.listener = Listener(
            mode=self.settings.mode,
            listen=self.settings.listen,
            engine=engine,
            limiter=limiter,
            tasks=tasks,
            listen6=self.settings.listen6,
            listen6_required=self.settings.listen6_required,
        )
        self.routes.on_change = lambda table: tasks.spawn(leaves.prefetch(intercepted_hosts(table)))
        self.admin = AdminServer(
            address=self.settings.admin,
            metrics=self.metrics,
            token=self.token,
            routes_loaded=self.routes.loaded.is_set,
            quit_event=self.quit,
        )
        await self.admin.start()
        self.routes.start()
        self.reporter.start()
        await self.listener.start()
        log.info(
            "proxy started",
            extra={
                "mode": self.settings.mode,
                "listen": "{}:{}".format(*self.listener.address),
                "listen6": "[{}]:{}".format(*self.listener.address6) if self.listener.address6 else None,
                "admin": "{}:{}".format(*self.admin.address),
            },
        )

    async def close(self) -> None:
        if self.listener is not None:
            await self.listener.close(self.settings.shutdown_grace)
        await self.routes.close()
        await self.credentials.close()
        await self.reporter.close()
        self.connections.close()
        if self.admin is not None:
            await self.admin.close()
        await self.client.close()


async def run(settings: ProxySettings) -> None:
    """Run until SIGTERM/SIGINT or POST /quitquitquit, then shut down gracefully."""
    proxy = Proxy(settings)
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(WORKER_THREADS, thread_name_prefix="sesame-worker"))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, proxy.quit.set)
    await proxy.start()
    gc.collect()
    gc.freeze()  # startup objects (modules, routes, contexts) are never freed: keep them out of GC passes
    try:
        await proxy.quit.wait()
        log.info("shutting down")
    finally:
        await proxy.close()
