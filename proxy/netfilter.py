"""Transparent-mode REDIRECT rules: render them (pure) and apply/remove them (subprocess).

Locally generated TCP is sent to the proxy port by the nat OUTPUT hook, except traffic of the
proxy's own UID (no loop), loopback, and the excluded CIDRs/ports (e.g. the control plane).
Two backends render the same rules: ``nft`` (one ``nft -f`` script, atomic) and ``iptables``
(``iptables-restore --noflush`` input plus one jump inserted first in OUTPUT). Either way they run
before a service mesh's nat OUTPUT rules (see controlplane.injector_mesh for the ordering rule).
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from proxy.config import DEFAULT_LISTEN
from proxy.errors import ProxyError

__all__ = [
    "BACKENDS",
    "DEFAULT_CHAIN",
    "DEFAULT_NFT_TABLE",
    "DEFAULT_PROXY_PORT",
    "DEFAULT_PROXY_UID",
    "NFT_PRIORITY",
    "Backend",
    "NetfilterError",
    "RedirectSettings",
    "apply_rules",
    "detect_backend",
    "list_rules",
    "remove_rules",
    "render_iptables",
    "render_nft",
]

Backend = Literal["nft", "iptables"]
BACKENDS: tuple[str, ...] = ("auto", "nft", "iptables")

DEFAULT_PROXY_PORT = DEFAULT_LISTEN[1]  # the proxy's own default listen port
DEFAULT_PROXY_UID = 16001  # not Istio's 1337 nor Linkerd's 2102 (the image's USER)
# Before iptables' nat OUTPUT (-100, where Istio's and Linkerd's rules live): Sesame's REDIRECT sees
# the app's connections first; the mesh still sees Sesame's upstream traffic (our RETURN by UID).
NFT_PRIORITY = -110
DEFAULT_CHAIN = "SESAME_OUTPUT"
DEFAULT_NFT_TABLE = "sesame"
_LOOPBACK_V4 = "127.0.0.0/8"
_LOOPBACK_V6 = "::1/128"
_MAX_JUMP_DELETES = 16  # bound the loop that removes duplicate OUTPUT jumps

Runner = Callable[..., subprocess.CompletedProcess]


class NetfilterError(ProxyError):
    """Rules could not be rendered, applied or removed."""

    code, status = "netfilter_failed", 500


@dataclass(frozen=True, kw_only=True)
class RedirectSettings:
    """What to redirect: all TCP to ``proxy_port`` except the proxy UID, loopback and exclusions.

    ``ipv6`` also captures IPv6 TCP (REDIRECT maps it to ``[::1]:proxy_port``, where the proxy listens
    in transparent mode unless ``--listen6 off``); when off, IPv6 traffic is left untouched.
    """

    proxy_port: int = DEFAULT_PROXY_PORT
    proxy_uid: int = DEFAULT_PROXY_UID
    # Other UIDs never redirected: a service mesh's proxy (Istio 1337, Linkerd 2102), whose own
    # upstream connections must leave the pod rather than loop back through Sesame.
    exclude_uids: tuple[int, ...] = ()
    exclude_cidrs: tuple[str, ...] = ()
    exclude_ports: tuple[int, ...] = ()
    ipv6: bool = False
    chain: str = DEFAULT_CHAIN
    nft_table: str = DEFAULT_NFT_TABLE

    def __post_init__(self) -> None:
        _check_port(self.proxy_port, "proxy_port")
        for port in self.exclude_ports:
            _check_port(port, "exclude_ports")
        for field, uids in (("proxy_uid", (self.proxy_uid,)), ("exclude_uids", self.exclude_uids)):
            if not all(isinstance(uid, int) and 0 <= uid < 2**32 for uid in uids):
                raise NetfilterError(f"{field} out of range: {uids!r}")
        for cidr in self.exclude_cidrs:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise NetfilterError(f"invalid exclude CIDR: {cidr!r}") from exc
        for name in (self.chain, self.nft_table):
            if not name or not name.replace("_", "").replace("-", "").isalnum() or len(name) > 28:
                raise NetfilterError(f"invalid chain/table name: {name!r}")

    def networks(self, version: int) -> list[str]:
        """Excluded networks of one IP version, normalised (``10.0.0.5`` → ``10.0.0.5/32``)."""
        nets = (ipaddress.ip_network(c, strict=False) for c in self.exclude_cidrs)
        return [str(n) for n in nets if n.version == version]


def _check_port(port: int, field: str) -> None:
    if not isinstance(port, int) or not 0 < port < 65536:
        raise NetfilterError(f"{field}: port out of range: {port!r}")


# ---------------------------------------------------------------------------------------------
# rendering (pure)


def render_iptables(settings: RedirectSettings, *, version: int = 4) -> str:
    """``iptables-restore --noflush`` input for the nat table (``version`` 4 or 6).

    Declaring the chain flushes it, so re-applying replaces our rules and nothing else; the
    jump from OUTPUT is added separately by :func:`apply_rules` (exactly once).
    """
    chain = settings.chain
    loopback = _LOOPBACK_V4 if version == 4 else _LOOPBACK_V6
    lines = [
        "*nat",
        f":{chain} - [0:0]",
        f"-A {chain} -m owner --uid-owner {settings.proxy_uid} -j RETURN",
        *(f"-A {chain} -m owner --uid-owner {uid} -j RETURN" for uid in settings.exclude_uids),
        f"-A {chain} -o lo -j RETURN",
        f"-A {chain} -d {loopback} -j RETURN",
    ]
    lines += [f"-A {chain} -d {net} -j RETURN" for net in settings.networks(version)]
    lines += [f"-A {chain} -p tcp --dport {port} -j RETURN" for port in settings.exclude_ports]
    lines += [f"-A {chain} -p tcp -j REDIRECT --to-ports {settings.proxy_port}", "COMMIT", ""]
    return "\n".join(lines)


def _nft_family(settings: RedirectSettings) -> str:
    return "inet" if settings.ipv6 else "ip"


def _ip_versions(settings: RedirectSettings) -> tuple[int, ...]:
    return (4, 6) if settings.ipv6 else (4,)


def iptables_jump(settings: RedirectSettings) -> list[str]:
    """The rule spec (without ``-A``/``-D OUTPUT``) sending OUTPUT TCP into our chain."""
    return ["-p", "tcp", "-j", settings.chain]


def render_nft(settings: RedirectSettings) -> str:
    """An ``nft -f`` script: (re)creates table ``sesame`` atomically, touching nothing else."""
    family = _nft_family(settings)
    table, chain = settings.nft_table, settings.chain
    rules = [f"meta skuid {settings.proxy_uid} return"]
    if settings.exclude_uids:
        rules.append(f"meta skuid {{ {', '.join(str(u) for u in settings.exclude_uids)} }} return")
    rules += [
        'oifname "lo" return',
        f"ip daddr {_LOOPBACK_V4} return",
    ]
    if settings.ipv6:
        rules.append(f"ip6 daddr {_LOOPBACK_V6} return")
    for version, selector in ((4, "ip"), (6, "ip6")):
        nets = settings.networks(version)
        if nets and (version == 4 or settings.ipv6):
            rules.append(f"{selector} daddr {{ {', '.join(nets)} }} return")
    if settings.exclude_ports:
        ports = ", ".join(str(p) for p in settings.exclude_ports)
        rules.append(f"tcp dport {{ {ports} }} return")
    rules.append(f"meta l4proto tcp redirect to :{settings.proxy_port}")
    body = "\n".join(f"\t\t{rule}" for rule in rules)
    return (
        f"table {family} {table}\n"
        f"delete table {family} {table}\n"
        f"table {family} {table} {{\n"
        f"\tchain output {{\n"
        f"\t\ttype nat hook output priority {NFT_PRIORITY}; policy accept;\n"
        f"\t\tmeta l4proto tcp jump {chain}\n"
        f"\t}}\n"
        f"\tchain {chain} {{\n"
        f"{body}\n"
        f"\t}}\n"
        f"}}\n"
    )


# ---------------------------------------------------------------------------------------------
# applying (subprocess)


def detect_backend(*, which: Callable[[str], str | None] = shutil.which) -> Backend:
    """``nft`` where the binary exists, else ``iptables``; raises if neither is installed."""
    if which("nft"):
        return "nft"
    if which("iptables-restore"):
        return "iptables"
    raise NetfilterError("neither nft nor iptables-restore is installed")


def _resolve(backend: str) -> Backend:
    if backend == "auto":
        return detect_backend()
    if backend not in ("nft", "iptables"):
        raise NetfilterError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return backend  # type: ignore[return-value]


def _prepare(
    backend: str, netns: str | None, run: Runner
) -> tuple[Backend, Callable[..., subprocess.CompletedProcess]]:
    """The resolved backend and a command runner (optionally inside ``ip netns exec NETNS``)
    capturing text output."""
    prefix = ["ip", "netns", "exec", netns] if netns else []

    def call(argv: Sequence[str], *, stdin: str | None = None, check: bool = True):
        try:
            proc = run([*prefix, *argv], input=stdin, capture_output=True, text=True, check=False)
        except OSError as exc:
            raise NetfilterError(f"{argv[0]}: {exc}") from exc
        if check and proc.returncode != 0:
            raise NetfilterError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    return _resolve(backend), call


def _ipt(version: int, tool: str = "") -> str:
    return ("iptables" if version == 4 else "ip6tables") + tool


def apply_rules(
    settings: RedirectSettings,
    *,
    backend: str = "auto",
    netns: str | None = None,
    run: Runner = subprocess.run,
) -> Backend:
    """Install (or replace) the rules; idempotent. Returns the backend used."""
    chosen, call = _prepare(backend, netns, run)
    if chosen == "nft":
        call(["nft", "-f", "-"], stdin=render_nft(settings))
        return chosen
    jump = iptables_jump(settings)
    for version in _ip_versions(settings):
        call([_ipt(version, "-restore"), "--noflush"], stdin=render_iptables(settings, version=version))
        present = call([_ipt(version), "-t", "nat", "-C", "OUTPUT", *jump], check=False)
        if present.returncode != 0:
            call([_ipt(version), "-t", "nat", "-I", "OUTPUT", "1", *jump])
    return chosen


def remove_rules(
    settings: RedirectSettings,
    *,
    backend: str = "auto",
    netns: str | None = None,
    run: Runner = subprocess.run,
) -> None:
    """Remove everything :func:`apply_rules` installed; a no-op when nothing is installed."""
    chosen, call = _prepare(backend, netns, run)
    if chosen == "nft":
        family = _nft_family(settings)
        # "table X" creates it if absent, so the delete never fails on a clean system.
        call(
            ["nft", "-f", "-"],
            stdin=f"table {family} {settings.nft_table}\ndelete table {family} {settings.nft_table}\n",
        )
        return
    jump = iptables_jump(settings)
    for version in _ip_versions(settings):
        ipt = _ipt(version)
        for _ in range(_MAX_JUMP_DELETES):
            if call([ipt, "-t", "nat", "-D", "OUTPUT", *jump], check=False).returncode:
                break
        call([ipt, "-t", "nat", "-F", settings.chain], check=False)
        call([ipt, "-t", "nat", "-X", settings.chain], check=False)


def list_rules(
    settings: RedirectSettings,
    *,
    backend: str = "auto",
    netns: str | None = None,
    run: Runner = subprocess.run,
) -> str:
    """The installed rules as the backend prints them (for logs and troubleshooting)."""
    chosen, call = _prepare(backend, netns, run)
    if chosen == "nft":
        family = _nft_family(settings)
        return call(["nft", "list", "table", family, settings.nft_table]).stdout
    return "".join(call([_ipt(v, "-save"), "-t", "nat"]).stdout for v in _ip_versions(settings))
