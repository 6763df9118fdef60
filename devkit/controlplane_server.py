"""Start a real control plane for tests and the demo: in-process or as a subprocess, on port 0.

async with running_control_plane(tmp_path / "cp.db") as cp:   # in-process (aiohttp runner)
    cp.url, cp.owner_key, cp.app

with control_plane_process(tmp_path / "cp.db") as cp:           # `sesame-controlplane serve`
    cp.url, cp.owner_key, cp.process
"""

from __future__ import annotations

import base64
import json
import os
import select
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from controlplane.api_keys import generate_key
from controlplane.app import create_app
from controlplane.appkeys import API_KEYS
from controlplane.clock import Clock
from controlplane.config import Config
from controlplane.outbound import OutboundPolicy
from controlplane.permissions import Role
from devkit.processes import stop_process

__all__ = [
    "LOOPBACK",
    "LOOPBACK_ENV",
    "ControlPlane",
    "ControlPlaneProcess",
    "control_plane_process",
    "new_kek",
    "running_control_plane",
    "serving",
]

STARTUP_TIMEOUT_SECONDS = 20.0
# Test and demo servers (cluster issuers, token endpoints) listen on loopback, which the outbound
# policy refuses unless allow-listed: callers pass these explicitly.
LOOPBACK_CIDRS = "127.0.0.0/8,::1/128"
LOOPBACK = OutboundPolicy.parse(LOOPBACK_CIDRS)
LOOPBACK_ENV = {"SESAME_OUTBOUND_ALLOW": LOOPBACK_CIDRS}


def new_kek() -> bytes:
    return os.urandom(32)


@dataclass
class ControlPlane:
    url: str
    owner_key: str
    app: web.Application
    config: Config


@asynccontextmanager
async def running_control_plane(
    db_path: Path, *, clock: Clock | None = None, kek: bytes | None = None, host: str = "127.0.0.1",
    **config: Any,
) -> AsyncIterator[ControlPlane]:
    """An in-process control plane on `host`:<ephemeral> (default loopback) with a fresh owner key.

    `kek=None` generates one; `kek=b""` runs without a KEK. The port is bound first, so the issuer
    URL derives from the listen address (`http://127.0.0.1:<port>`) unless `exchange` sets one.
    """
    sock = socket.create_server((host, 0))
    port = sock.getsockname()[1]
    cfg = Config(db_path=db_path, listen_port=port, kek=new_kek() if kek is None else (kek or None), **config)
    try:
        app = create_app(cfg, clock=clock)
    except BaseException:
        sock.close()
        raise
    async with serving(app, sock=sock) as port:
        _, owner = await app[API_KEYS].create(name="test-owner", role=Role.OWNER)
        yield ControlPlane(url=f"http://{host}:{port}", owner_key=owner, app=app, config=cfg)


@asynccontextmanager
async def serving(
    app: web.Application, *, ssl_context: ssl.SSLContext | None = None, sock: socket.socket | None = None
) -> AsyncIterator[int]:
    """Serve `app` on `sock` or 127.0.0.1:<ephemeral> (HTTPS with `ssl_context`); yields the port."""
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        if sock is None:
            site: web.BaseSite = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        else:
            site = web.SockSite(runner, sock, ssl_context=ssl_context)
        await site.start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


@dataclass
class ControlPlaneProcess:
    url: str
    owner_key: str
    process: subprocess.Popen[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def control_plane_process(
    db_path: Path,
    *,
    kek: bytes | None = None,
    env: Mapping[str, str] | None = None,
    owner_key: str | None = None,
    args: tuple[str, ...] = (),
    db_dsn: str | None = None,
) -> Iterator[ControlPlaneProcess]:
    """`sesame-controlplane serve` in a subprocess; the owner key is set via SESAME_BOOTSTRAP_API_KEY.

    With `db_dsn` it serves that PostgreSQL database (`db_path` then only names the log file).
    """
    owner = owner_key or generate_key()
    kek = kek if kek is not None else new_kek()
    child_env = {
        **os.environ,
        **(env or {}),
        "SESAME_DB": db_dsn or str(db_path),
        "SESAME_LISTEN": "127.0.0.1:0",
        "SESAME_KEK": base64.b64encode(kek).decode(),
        "SESAME_BOOTSTRAP_API_KEY": owner,
    }
    log_path = db_path.with_name(db_path.name + ".log")
    with log_path.open("a") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "controlplane.main", "serve", *args],
            env=child_env,
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
        )
    try:
        url = _wait_for_url(proc, log_path)
        yield ControlPlaneProcess(url=url, owner_key=owner, process=proc, log_path=log_path, env=child_env)
    finally:
        stop_process(proc)


def _wait_for_url(proc: subprocess.Popen[str], log_path: Path) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            if "listening on " in line:
                return json.loads(line)["url"]
        if proc.poll() is not None:
            err = log_path.read_text(errors="replace")
            raise RuntimeError(f"control plane exited with {proc.returncode}: {err.strip()[-2000:]}")
    proc.kill()
    raise RuntimeError("control plane did not start in time")
