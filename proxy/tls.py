"""TLS for the running proxy: leaf contexts for intercepted hosts, upstream verification.

This module imports `ssl` only. The pod CA and the signing of leaf certificates (cryptography and
mitmproxy's CertStore, ~17 MB of RSS) live in proxy/pod_ca.py, which the running proxy never
imports: leaves are signed in a short-lived forked child, in one batch for all governed hosts when
the routes change, and cached here.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import os
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from proxy.errors import ProxyError

__all__ = [
    "BUNDLE_NAME",
    "CA_BASENAME",
    "DEFAULT_LEAF_LIFETIME",
    "TRUSTSTORE_NAME",
    "TRUSTSTORE_PASSWORD",
    "LeafCertificates",
    "LeafSigningFailed",
    "UpstreamTLS",
    "client_context",
    "sign_in_child",
    "system_roots_dir",
    "system_roots_file",
]

CA_BASENAME = "sesame"
DEFAULT_LEAF_LIFETIME = 2 * 24 * 3600.0  # seconds; renewed at half-life
_SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/cert.pem",  # macOS, BSD
)
_SYSTEM_DIRS = ("/etc/ssl/certs", "/etc/pki/tls/certs")  # with c_rehash links when update-ca-certificates ran
_HASHED = re.compile(r"[0-9a-f]{8}\.[0-9]+")
_leaf_files = itertools.count()
ALPN = ["http/1.1"]
ALPN_H2 = ["h2", "http/1.1"]  # offered to apps on intercepted connections, and to upstreams for h2 streams
BUNDLE_NAME = "ca-bundle.pem"
TRUSTSTORE_NAME = "truststore.p12"
TRUSTSTORE_PASSWORD = "changeit"  # the trust store holds public certificates only; Java wants a password

log = logging.getLogger("sesame.proxy.tls")

Signer = Callable[[Path, list[str]], Awaitable[dict[str, bytes]]]


class LeafSigningFailed(ProxyError):
    """The pod CA could not sign a leaf for an intercepted host (no CA, or the signer failed)."""

    code, status = "leaf_signing_failed", 502


async def sign_in_child(ca_dir: Path, hosts: list[str]) -> dict[str, bytes]:
    """Leaf certificates (PEM) for `hosts`, signed by the pod CA in a forked child process
    (proxy/pod_ca.py), so this process never loads cryptography or mitmproxy. A fork, not an exec:
    no interpreter path to find or be allowed to run. No hosts: make sure the pod CA exists."""
    return await asyncio.to_thread(_fork_and_sign, ca_dir, hosts)


def _fork_and_sign(ca_dir: Path, hosts: list[str]) -> dict[str, bytes]:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: sign, write JSON to the pipe, exit without running any parent code
        status = 1
        try:
            os.close(read_end)
            from proxy.pod_ca import sign_leaves

            payload = json.dumps({"leaves": sign_leaves(ca_dir, hosts)}).encode()
            status = 0
        except BaseException as exc:
            payload = json.dumps({"error": f"{type(exc).__name__}: {exc}"[:300]}).encode()
        try:
            with os.fdopen(write_end, "wb") as out:
                out.write(payload)
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()  # EOF when the child exits; bounded by the child's own work
    _, status = os.waitpid(pid, 0)
    try:
        answer = json.loads(data)
    except ValueError:
        answer = {"error": f"the signer exited with status {status} and no answer"}
    if "leaves" not in answer:
        raise LeafSigningFailed(f"signing leaves failed: {answer.get('error')}")
    return {host: pem.encode() for host, pem in answer["leaves"].items()}


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

    `prefetch` signs every governed host in one batch (when the routes change); `context_for` signs
    one on demand when it was not prefetched. A context is rebuilt past half its leaf's lifetime.
    """

    def __init__(
        self,
        ca_dir: Path,
        *,
        lifetime: float = DEFAULT_LEAF_LIFETIME,
        signer: Signer = sign_in_child,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ca_dir = ca_dir
        self._key_file = ca_dir / f"{CA_BASENAME}-ca.pem"  # the CA key signs and also keys the leaves
        self._signer, self._clock = signer, clock
        self._renew_after = lifetime / 2
        self._contexts: dict[str, tuple[ssl.SSLContext, float]] = {}
        self._pending: dict[str, asyncio.Future[None]] = {}

    async def ensure_ca(self) -> None:
        """Create the pod CA when `ca_dir` has none (the init container normally did)."""
        if not self._key_file.exists():
            await self._signer(self._ca_dir, [])

    def _fresh(self, host: str) -> ssl.SSLContext | None:
        entry = self._contexts.get(host)
        return entry[0] if entry is not None and self._clock() < entry[1] else None

    async def context_for(self, host: str) -> ssl.SSLContext:
        ctx = self._fresh(host)
        if ctx is None:
            await self._sign([host])
            ctx = self._fresh(host)
            if ctx is None:  # pragma: no cover - the signer answered without this host
                raise LeafSigningFailed(f"no leaf certificate for {host}")
        return ctx

    async def prefetch(self, hosts: Iterable[str]) -> None:
        """Sign the leaves of `hosts` that have none (or an old one), in one batch; failures are logged."""
        try:
            await self._sign([h for h in dict.fromkeys(hosts) if self._fresh(h) is None])
        except ProxyError as exc:
            log.warning("leaf prefetch failed", extra={"error": exc.code, "reason": exc.message})

    async def _sign(self, hosts: list[str]) -> None:
        """One signer run for the hosts no run is already signing; then wait for all of them."""
        mine = [h for h in hosts if h not in self._pending]
        if mine:
            batch = asyncio.ensure_future(self._run(mine))
            for host in mine:
                self._pending[host] = batch
            batch.add_done_callback(lambda _f: [self._pending.pop(h, None) for h in mine])
        waits = {self._pending[h] for h in hosts if h in self._pending}
        for fut in waits:
            await asyncio.shield(fut)

    async def _run(self, hosts: list[str]) -> None:
        pems = await self._signer(self._ca_dir, hosts)
        expires = self._clock() + self._renew_after
        for host, pem in pems.items():
            self._contexts[host] = (await asyncio.to_thread(self._context, pem), expires)

    def _context(self, leaf_pem: bytes) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(ALPN_H2)  # the app picks; h2 goes to proxy/h2_engine.py
        # load_cert_chain reads files only: a private, unique, short-lived file in the CA directory
        leaf_path = self._ca_dir / f".leaf-{os.getpid()}-{next(_leaf_files)}.pem"
        fd = os.open(leaf_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(leaf_pem)
            ctx.load_cert_chain(leaf_path, self._key_file)
        finally:
            os.unlink(leaf_path)
        return ctx


class UpstreamTLS:
    """Client-side SSLContexts for upstreams: system roots + an optional extra CA file, or a route's
    own CA. ALPN http/1.1 (the HTTP/1.1 engine), or h2 then http/1.1 (streams of HTTP/2 apps)."""

    def __init__(self, extra_ca_file: Path | None = None) -> None:
        self._extra = str(extra_ca_file) if extra_ca_file else None
        self.default = client_context(self._extra)
        self.default.set_alpn_protocols(ALPN)
        self._by_ca: dict[tuple[str | None, bool], ssl.SSLContext] = {}

    def context(self, ca_pem: str | None = None, *, h2: bool = False) -> ssl.SSLContext:
        if not ca_pem and not h2:
            return self.default
        ctx = self._by_ca.get((ca_pem, h2))
        if ctx is None:
            ctx = self._by_ca[(ca_pem, h2)] = client_context(ca_pem or self._extra)
            ctx.set_alpn_protocols(ALPN_H2 if h2 else ALPN)
        return ctx
