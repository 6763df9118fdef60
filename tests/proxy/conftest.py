"""Fixtures for proxy tests: a dev CA, real upstreams, a control-plane double and an in-process proxy."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devkit.certs import DevCA
from devkit.upstream import ApiServer, server_context
from proxy.app import Proxy
from proxy.config import ProxySettings
from proxy.pod_ca import init_pod_ca
from tests.proxy.cp_double import ControlPlaneDouble

API_KEY = "sk-live-upstream-secret"


class FakeClock:
    """Monotonic clock the tests move by hand (credential expiry without sleeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Pki:
    dev_ca: DevCA
    dev_ca_file: Path
    ca_dir: Path
    trust_bundle: Path  # system roots + pod CA, what injected apps trust
    client_bundle: Path  # pod CA + dev CA (tests' upstreams are signed by the dev CA)
    pod_ca_file: Path
    server_cert: Path
    server_key: Path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    dev_ca = DevCA()
    dev_ca_file = dev_ca.write_ca(root / "dev-ca.pem")
    paths = init_pod_ca(root / "ca", root / "trust")
    server = dev_ca.issue(["localhost", "127.0.0.1", "api.sesame.test", "10.231.0.2"], root / "server")
    client_bundle = root / "client-bundle.pem"
    client_bundle.write_bytes(paths["ca"].read_bytes() + dev_ca.cert_pem)
    return Pki(
        dev_ca,
        dev_ca_file,
        root / "ca",
        paths["bundle"],
        client_bundle,
        paths["ca"],
        server.cert_file,
        server.key_file,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def https_api(pki: Pki) -> AsyncIterator[ApiServer]:
    api = await ApiServer(API_KEY, ssl_context=server_context(pki.server_cert, pki.server_key)).start()
    yield api
    await api.close()


@pytest.fixture
async def http_api() -> AsyncIterator[ApiServer]:
    api = await ApiServer(API_KEY).start()
    yield api
    await api.close()


def route(
    name: str,
    host: str,
    port: int,
    *,
    scheme: str = "https",
    tls: str | None = None,
    injection: dict | None = None,
    audience: str | None = None,
) -> dict:
    return {
        "target_id": f"tg_{name}",
        "name": name,
        "host": host,
        "port": port,
        "scheme": scheme,
        "tls": tls or ("intercept" if scheme == "https" else "none"),
        "audience": audience or f"aud-{name}",
        "injection": injection or {"type": "bearer", "name": None, "prefix": None},
    }


@pytest.fixture
async def cp() -> AsyncIterator[ControlPlaneDouble]:
    double = await ControlPlaneDouble().start()
    yield double
    await double.stop()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("sa-token-1")
    return path


def settings_for(control_plane: str, pki: Pki, token_file: Path, **overrides) -> ProxySettings:
    """In-process proxy settings: ephemeral ports, the test PKI, background reports out of the way."""
    base = dict(
        control_plane=control_plane,
        token_file=token_file,
        listen=("127.0.0.1", 0),
        admin=("127.0.0.1", 0),
        ca_dir=pki.ca_dir,
        upstream_ca_file=pki.dev_ca_file,
        heartbeat_interval=3600,
        observations_interval=3600,
    )
    base.update(overrides)
    return ProxySettings(**base)


@pytest.fixture
async def start_proxy(cp: ControlPlaneDouble, pki: Pki, token_file: Path, clock: FakeClock):
    """Start an in-process proxy (explicit mode unless overridden) once cp.routes are set."""
    started: list[Proxy] = []

    async def start(**overrides) -> Proxy:
        proxy = Proxy(settings_for(cp.url, pki, token_file, **overrides), clock=clock)
        await proxy.start()
        started.append(proxy)
        await asyncio.wait_for(proxy.routes.loaded.wait(), 10)
        return proxy

    yield start
    for proxy in started:
        await proxy.close()


def proxy_url(proxy: Proxy) -> str:
    assert proxy.listener is not None
    host, port = proxy.listener.address
    return f"http://{host}:{port}"


def client_ssl(pki: Pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.client_bundle))
