"""`sesame-proxy init`: the init container. Creates the pod CA and trust bundles, then (transparent
mode) installs the REDIRECT rules of `proxy.netfilter`.

In transparent mode it runs as root with NET_ADMIN/NET_RAW (rules) and CHOWN (it hands the
private CA directory to the proxy's UID); in explicit mode it runs as the proxy's UID and touches
no rules. Exits 0 on success, 1 on failure (the pod then does not start), 2 on bad flags.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from proxy.config import DEFAULT_CA_DIR, DEFAULT_TRUST_DIR
from proxy.errors import ConfigError, ProxyError
from proxy.netfilter import (
    BACKENDS,
    DEFAULT_PROXY_PORT,
    DEFAULT_PROXY_UID,
    RedirectSettings,
    apply_rules,
    list_rules,
)

__all__ = ["InitSettings", "control_plane_cidrs", "main", "run"]

log = logging.getLogger("sesame.init")

Resolver = Callable[[str, int], list[str]]


@dataclass(frozen=True, kw_only=True)
class InitSettings:
    """Everything the init container does, built once from flags and SESAME_* variables."""

    mode: Literal["transparent", "explicit"] = "transparent"
    redirect: RedirectSettings = field(default_factory=RedirectSettings)
    control_plane: str = ""
    ca_dir: Path = DEFAULT_CA_DIR
    trust_dir: Path = DEFAULT_TRUST_DIR
    backend: str = "auto"

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> InitSettings:
        if ns.mode not in ("transparent", "explicit"):
            raise ConfigError(f"mode must be transparent or explicit, got {ns.mode!r}", field="mode")
        if ns.netfilter_backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}", field="backend")
        try:
            ports = tuple(int(p) for p in _items(ns.exclude_ports))
            redirect = RedirectSettings(
                proxy_port=int(ns.proxy_port),
                proxy_uid=int(ns.proxy_uid),
                exclude_uids=tuple(int(u) for u in _items(ns.exclude_uids)),
                exclude_cidrs=_items(ns.exclude_cidrs),
                exclude_ports=ports,
                ipv6=str(ns.ipv6).lower() in ("1", "true", "yes"),
            )
        except ValueError as exc:
            raise ConfigError(f"invalid port or UID: {exc}") from None
        return cls(
            mode=ns.mode,
            redirect=redirect,
            control_plane=ns.control_plane,
            ca_dir=Path(ns.ca_dir),
            trust_dir=Path(ns.trust_dir),
            backend=ns.netfilter_backend,
        )


def _items(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in (text or "").split(",") if p.strip())


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sesame-proxy init", description=__doc__.split("\n\n")[0])

    def flag(name: str, default: object, help_: str) -> None:
        var = "SESAME_" + name.upper().replace("-", "_")
        parser.add_argument(f"--{name}", default=env.get(var, default), help=f"{help_} (env {var})")

    flag("mode", "transparent", "transparent (install REDIRECT rules) or explicit (CA only)")
    flag("proxy-port", DEFAULT_PROXY_PORT, "port the proxy listens on (127.0.0.1)")
    flag("proxy-uid", DEFAULT_PROXY_UID, "UID of the proxy: its traffic is never redirected")
    flag("exclude-uids", "", "comma-separated UIDs never redirected (a service mesh's proxy)")
    flag("exclude-cidrs", "", "comma-separated destination CIDRs never redirected")
    flag("exclude-ports", "", "comma-separated destination TCP ports never redirected")
    flag("control-plane", "", "control plane URL: its addresses are never redirected")
    flag("ca-dir", str(DEFAULT_CA_DIR), "private pod CA directory (proxy only)")
    flag("trust-dir", str(DEFAULT_TRUST_DIR), "trust bundle directory (apps, read-only)")
    flag("netfilter-backend", "auto", "auto (nft where available), nft or iptables")
    flag("ipv6", "false", "also redirect IPv6 TCP (to [::1]:PORT; the proxy listens there by default)")
    return parser


def control_plane_cidrs(url: str, *, resolve: Resolver | None = None) -> tuple[str, ...]:
    """Host addresses of the control plane URL, as /32 or /128 CIDRs; empty when unresolvable.

    Best effort: the proxy's own traffic is excluded by UID anyway, this only keeps other
    processes' calls to the control plane away from the proxy.
    """
    if not url:
        return ()
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addrs = [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            addrs = (resolve or _resolve)(host, port)
        except OSError as exc:
            log.warning("cannot resolve control plane host %s (%s); not excluding it", host, exc)
            return ()
    nets = {ipaddress.ip_network(a) for a in addrs}
    return tuple(str(n) for n in sorted(nets, key=lambda n: (n.version, n)))


def _resolve(host: str, port: int) -> list[str]:
    return [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def _hand_to_proxy(ca_dir: Path, uid: int) -> None:
    """Root created the CA: make the directory 0700 and everything in it owned by the proxy's UID."""
    ca_dir.chmod(0o700)
    for path in (ca_dir, *ca_dir.iterdir()):
        os.chown(path, uid, uid, follow_symlinks=False)


def run(settings: InitSettings, *, resolve: Resolver | None = None) -> None:
    """Create the CA and trust bundles, then install the rules (transparent mode)."""
    from proxy.pod_ca import init_pod_ca  # mitmproxy's cert store: imported only when needed

    paths = init_pod_ca(settings.ca_dir, settings.trust_dir)
    if os.geteuid() == 0 and settings.redirect.proxy_uid != 0:
        _hand_to_proxy(settings.ca_dir, settings.redirect.proxy_uid)
    log.info("pod CA ready: %s; trust bundle %s", paths.get("ca"), paths.get("bundle"))
    if settings.mode == "explicit":
        log.info("explicit mode: no REDIRECT rules installed")
        return
    redirect = settings.redirect
    extra = tuple(
        c
        for c in control_plane_cidrs(settings.control_plane, resolve=resolve)
        if c not in redirect.exclude_cidrs and (redirect.ipv6 or ":" not in c)
    )
    if extra:
        redirect = replace(redirect, exclude_cidrs=redirect.exclude_cidrs + extra)
    backend = apply_rules(redirect, backend=settings.backend)
    log.info("REDIRECT rules installed with %s:\n%s", backend, list_rules(redirect, backend=backend))


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s sesame-init %(levelname)s %(message)s")
    ns = _parser(os.environ if env is None else env).parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = InitSettings.from_namespace(ns)
    except ProxyError as exc:
        log.error("%s: %s", exc.code, exc.message)
        return 2
    try:
        run(settings)
    except (ProxyError, OSError) as exc:
        log.error("%s: %s", getattr(exc, "code", "init_failed"), getattr(exc, "message", exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
