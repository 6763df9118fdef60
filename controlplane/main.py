"""`sesame-controlplane`: `init --db PATH|DSN` (schema + first owner key) and `serve --db --listen`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from aiohttp import web

from controlplane.api_keys import ApiKeys
from controlplane.app import check_kek, create_app
from controlplane.audit import AuditWriter
from controlplane.clock import SystemClock
from controlplane.config import Config
from controlplane.envelope import Envelope
from controlplane.errors import SesameError, StartupError
from controlplane.exchange_settings import ENV_FLAGS
from controlplane.logs import AccessLogger, configure_logging, json_line
from controlplane.permissions import Role
from controlplane.serving_tls import ServingCertificate
from controlplane.store import open_store
from controlplane.store.sqlite.db import SYNCHRONOUS_MODES

__all__ = ["main"]

log = logging.getLogger("controlplane")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sesame-controlplane", description="Sesame control plane")
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="create the schema and print the first owner API key once")
    init.add_argument("--db", help="SQLite file or postgresql:// DSN (env SESAME_DB)")
    serve = sub.add_parser("serve", help="serve the HTTP API")
    serve.add_argument("--db", help="SQLite file or postgresql:// DSN (env SESAME_DB)")
    serve.add_argument("--listen", help="HOST:PORT (env SESAME_LISTEN, default 127.0.0.1:8080)")
    serve.add_argument("--tls-cert", help="PEM certificate chain: serve HTTPS (env SESAME_TLS_CERT)")
    serve.add_argument("--tls-key", help="PEM private key (env SESAME_TLS_KEY)")
    serve.add_argument("--kek-file", help="file holding the key-encryption key (env SESAME_KEK_FILE)")
    serve.add_argument("--rate-limit", type=int, help="admin requests/minute/key (env SESAME_RATE_LIMIT)")
    serve.add_argument(
        "--sqlite-synchronous",
        choices=SYNCHRONOUS_MODES,
        help="SQLite fsync per commit (full, default) or not (normal) (env SESAME_SQLITE_SYNCHRONOUS)",
    )
    serve.add_argument("--log-level", help="DEBUG, INFO, WARNING (env SESAME_LOG_LEVEL)")
    serve.add_argument(
        "--outbound-allow",
        help="CIDRs outbound fetches may reach besides global addresses (env SESAME_OUTBOUND_ALLOW)",
    )
    _exchange_flags(serve)
    return parser


_EXCHANGE_FLAGS = (
    ("--issuer-url", "public URL: `iss` of signed JWTs and OIDC discovery (default: the listen address)"),
    ("--kubeconfig", "kubeconfig for TokenReview (default: in-cluster)"),
    ("--kube-context", "kubeconfig context for TokenReview"),
    ("--exchange-rate-limit", "token exchanges per minute per workload (default 600)"),
    ("--approval-window", "seconds an approval grant lasts (default 3600)"),
    ("--routes-refresh", "seconds between proxy route refreshes (default 30)"),
    ("--attestation-cache", "seconds a verified SA token is reused (default 30)"),
    ("--registry-cache", "seconds registry lookups are cached between writes (default 5)"),
    ("--key-publication-delay", "seconds a rotated signing key is published before it signs (default 0)"),
)


def _exchange_flags(serve: argparse.ArgumentParser) -> None:
    """Token-exchange flags; each has a `SESAME_*` twin (`controlplane.exchange_settings.ENV_FLAGS`)."""
    for flag, text in _EXCHANGE_FLAGS:
        serve.add_argument(flag, help=f"{text} (env {ENV_FLAGS[flag[2:].replace('-', '_')]})")


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = _parser().parse_args(argv)
    env = os.environ if env is None else env
    try:
        config = Config.build(vars(args), env)
        configure_logging(config.log_level)
        if args.command == "init":
            return _run(_init(config))
        return _run(_serve(config))
    except SesameError as exc:
        print(f"sesame-controlplane: error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _run(coro: Any) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(coro)
    return uvloop.run(coro)


async def _init(config: Config) -> int:
    clock = SystemClock()
    store = await open_store(config.db_location, sqlite_synchronous=config.sqlite_synchronous)
    try:
        await check_kek(store, Envelope.from_keys(config.kek, config.kek_previous))
        keys = ApiKeys(store.api_keys, clock)
        if await store.api_keys.count_role(Role.OWNER.label) > 0:
            print(
                f"sesame-controlplane: {config.db_label} is already initialised (an owner key exists)",
                file=sys.stderr,
            )
            return 1
        record, plaintext = await keys.create(name="owner", role=Role.OWNER)
        audit = AuditWriter(store.audit, clock)
        await audit.start()
        await audit.record(
            type="api_key.created",
            actor="cli:init",
            outcome="success",
            extra={"id": record.id, "name": record.name, "role": record.role, "prefix": record.prefix},
        )
        await audit.close()
    finally:
        await store.close()
    print(f"Initialised {config.db_label}. Owner API key (shown once, store it now):", file=sys.stderr)
    print(plaintext, flush=True)
    return 0


def _serving_certificate(config: Config) -> ServingCertificate | None:
    """The serving certificate (HTTPS when configured), reloaded when its files change."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    try:
        return ServingCertificate(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(f"cannot load TLS certificate/key: {exc}") from exc


def _bind(config: Config) -> socket.socket:
    """The listening socket, bound before the app is built so port 0 is known for the issuer URL."""
    family = socket.AF_INET6 if ":" in config.listen_host else socket.AF_INET
    try:
        return socket.create_server((config.listen_host, config.listen_port), family=family, backlog=1024)
    except OSError as exc:
        raise StartupError(f"cannot listen on {config.listen_host}:{config.listen_port}: {exc}") from exc


async def _serve(config: Config) -> int:
    certificate = _serving_certificate(config)
    ssl_ctx = certificate.listening if certificate else None
    if config.listen_port:
        config.issuer()  # StartupError before binding when no issuer can be known
    sock = _bind(config)
    config = replace(config, listen_port=sock.getsockname()[1])
    try:
        app = create_app(config)
    except BaseException:
        sock.close()
        raise
    issuer, chosen_by = config.issuer()
    runner = web.AppRunner(app, handle_signals=False, access_log_class=AccessLogger)
    await runner.setup()
    try:
        site = web.SockSite(runner, sock, ssl_context=ssl_ctx)
        await site.start()
        port = config.listen_port
        host = config.listen_host if ":" not in config.listen_host else f"[{config.listen_host}]"
        log.info("sesame-controlplane issuer URL %s (from %s)", issuer, chosen_by)
        url = f"{config.scheme}://{host}:{port}"
        # The readiness line on stdout (devkit and tests wait for it), in the logs' JSON format.
        print(json_line(f"sesame-controlplane listening on {url}", url=url), flush=True)
        if certificate:
            certificate.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down")
    finally:
        if certificate:
            await certificate.close()
        await runner.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
