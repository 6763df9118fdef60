"""TLS: the pod CA and its leaf certificates (mitmproxy's CertStore), and upstream verification."""

from __future__ import annotations

import asyncio
import datetime
import functools
import ipaddress
import itertools
import os
import re
import ssl
import time
from pathlib import Path

from cryptography import x509
from mitmproxy import certs

__all__ = [
    "BUNDLE_NAME",
    "CA_BASENAME",
    "DEFAULT_LEAF_LIFETIME",
    "TRUSTSTORE_NAME",
    "TRUSTSTORE_PASSWORD",
    "LeafCertificates",
    "UpstreamTLS",
    "client_context",
    "init_pod_ca",
    "load_pod_ca",
    "system_roots_dir",
    "system_roots_file",
]

CA_BASENAME = "sesame"
CA_KEY_SIZE = 2048
DEFAULT_LEAF_LIFETIME = datetime.timedelta(days=2)
_SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/cert.pem",  # macOS, BSD
)
_SYSTEM_DIRS = ("/etc/ssl/certs", "/etc/pki/tls/certs")  # with c_rehash links when update-ca-certificates ran
_HASHED = re.compile(r"[0-9a-f]{8}\.[0-9]+")
_leaf_files = itertools.count()
ALPN = ["http/1.1"]
BUNDLE_NAME = "ca-bundle.pem"
TRUSTSTORE_NAME = "truststore.p12"
TRUSTSTORE_PASSWORD = "changeit"  # the trust store holds public certificates only; Java wants a password

# mitmproxy signs leaves valid for a year (module constant); pod-CA leaves are short-lived and
# renewed by LeafCertificates below, so lower it once here.
certs.CERT_EXPIRY = DEFAULT_LEAF_LIFETIME


def system_roots_file() -> str:
    """The system trust bundle, falling back to certifi's copy of the Mozilla roots."""
    for path in _SYSTEM_BUNDLES:
        if os.path.isfile(path):
            return path
    import certifi

    return certifi.where()


@functools.cache
def system_roots_dir() -> str | None:
    """A directory of roots named by subject hash (`<hash>.0`), or None. OpenSSL looks roots up there
    on demand, so a context does not parse and hold all ~150 roots (~0.5 MB per context)."""
    for path in _SYSTEM_DIRS:
        try:
            with os.scandir(path) as entries:
                if any(_HASHED.fullmatch(entry.name) for entry in entries):
                    return path
        except OSError:
            continue
    return None


def load_pod_ca(ca_dir: Path) -> certs.CertStore:
    """Load the pod CA from `ca_dir`, creating it (private files, umask 077) when missing."""
    ca_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return certs.CertStore.from_store(ca_dir, CA_BASENAME, CA_KEY_SIZE)


def init_pod_ca(
    ca_dir: Path, trust_dir: Path, *, truststore_password: str = TRUSTSTORE_PASSWORD
) -> dict[str, Path]:
    """`sesame-proxy init-ca`: create (or reuse) the pod CA in the private `ca_dir`, and write the apps'
    trust material to `trust_dir`: ca-bundle.pem (system roots + pod CA) and truststore.p12 (Java)."""
    from proxy import pkcs12_truststore  # init-ca only: not loaded by `run`

    store = load_pod_ca(ca_dir)
    ca_pem = store.default_ca.to_pem()
    trust_dir.mkdir(parents=True, exist_ok=True)
    roots = Path(system_roots_file()).read_bytes()
    bundle, truststore = trust_dir / BUNDLE_NAME, trust_dir / TRUSTSTORE_NAME
    _write_public(bundle, roots.rstrip(b"\n") + b"\n" + ca_pem)
    entries = pkcs12_truststore.trust_entries(roots, ca_pem)  # Java: public roots too, not only ours
    _write_public(truststore, pkcs12_truststore.serialize(entries, truststore_password))
    return {"ca": ca_dir / f"{CA_BASENAME}-ca-cert.pem", "bundle": bundle, "truststore": truststore}


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def client_context(ca: str | None = None, *, roots_dir: str | None = None) -> ssl.SSLContext:
    """Verification against the system roots plus `ca` (PEM text or a PEM file path).

    The roots come from the hashed directory (`roots_dir`, default system_roots_dir()) when there is
    one, looked up per handshake; else from the bundle file, loaded whole."""
    roots_dir = roots_dir or system_roots_dir()
    if roots_dir:
        ctx = ssl.create_default_context(capath=roots_dir)
    else:
        ctx = ssl.create_default_context(cafile=system_roots_file())
    if ca and ca.lstrip().startswith("-----BEGIN"):
        ctx.load_verify_locations(cadata=ca)
    elif ca:
        ctx.load_verify_locations(cafile=ca)
    return ctx


class LeafCertificates:
    """Server-side SSLContexts for governed hosts, one per host, signed by the pod CA and cached.

    A context is rebuilt when its leaf passes half of its lifetime; signing runs off the event loop.
    """

    def __init__(
        self, store: certs.CertStore, ca_dir: Path, *, lifetime: datetime.timedelta = DEFAULT_LEAF_LIFETIME
    ):
        self._store = store
        self._ca_file = ca_dir / f"{CA_BASENAME}-ca.pem"  # the CA key signs and also keys the leaves
        self._dir = ca_dir
        self._renew_after = lifetime.total_seconds() / 2
        self._contexts: dict[str, tuple[ssl.SSLContext, float]] = {}
        self._pending: dict[str, asyncio.Future[ssl.SSLContext]] = {}

    async def context_for(self, host: str) -> ssl.SSLContext:
        entry = self._contexts.get(host)
        if entry is not None and time.monotonic() < entry[1]:
            return entry[0]
        pending = self._pending.get(host)
        if pending is None:
            pending = self._pending[host] = asyncio.ensure_future(asyncio.to_thread(self._build, host))
            pending.add_done_callback(lambda _f: self._pending.pop(host, None))
        return await asyncio.shield(pending)

    def _build(self, host: str) -> ssl.SSLContext:
        try:
            san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            san = x509.DNSName(host)
        sans = x509.GeneralNames([san])
        self._store.certs.pop((host, sans), None)  # renewals must not get the cached old leaf back
        entry = self._store.get_cert(host, [san])
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(ALPN)
        # load_cert_chain reads files only: a private, unique, short-lived file in the CA directory
        leaf_path = self._dir / f".leaf-{os.getpid()}-{next(_leaf_files)}.pem"
        fd = os.open(leaf_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(entry.cert.to_pem())
            ctx.load_cert_chain(leaf_path, self._ca_file)
        finally:
            os.unlink(leaf_path)
        self._contexts[host] = (ctx, time.monotonic() + self._renew_after)
        return ctx


class UpstreamTLS:
    """Client-side SSLContexts for upstreams (ALPN http/1.1): system roots + an optional extra CA file,
    or a route's own CA."""

    def __init__(self, extra_ca_file: Path | None = None) -> None:
        self.default = client_context(str(extra_ca_file) if extra_ca_file else None)
        self.default.set_alpn_protocols(ALPN)
        self._by_ca: dict[str, ssl.SSLContext] = {}

    def context(self, ca_pem: str | None = None) -> ssl.SSLContext:
        if not ca_pem:
            return self.default
        ctx = self._by_ca.get(ca_pem)
        if ctx is None:
            ctx = self._by_ca[ca_pem] = client_context(ca_pem)
            ctx.set_alpn_protocols(ALPN)
        return ctx
