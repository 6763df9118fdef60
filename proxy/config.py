"""Proxy settings: one frozen value built and validated once from flags and SESAME_* env variables."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from proxy.errors import ConfigError

__all__ = [
    "DEFAULT_ADMIN",
    "DEFAULT_CA_DIR",
    "DEFAULT_LISTEN",
    "DEFAULT_LISTEN6",
    "DEFAULT_TOKEN_FILE",
    "DEFAULT_TRUST_DIR",
    "ProxySettings",
    "add_run_arguments",
    "parse_hostport",
]

DEFAULT_LISTEN = ("127.0.0.1", 16001)  # clear of Istio (15001) and Linkerd (4140)
DEFAULT_LISTEN6 = "auto"  # transparent mode: also [::1]:<listen port> when the host has ::1
DEFAULT_ADMIN = ("127.0.0.1", 16020)  # clear of Istio's merged metrics (15020)
DEFAULT_TOKEN_FILE = Path("/var/run/secrets/sesame/token")
DEFAULT_CA_DIR = Path("/var/run/sesame/ca")
DEFAULT_TRUST_DIR = Path("/var/run/sesame/trust")
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_RESPONSE_TIMEOUT = 60.0
DEFAULT_UPSTREAM_IDLE_TIMEOUT = 30.0
DEFAULT_CLIENT_IDLE_TIMEOUT = 300.0
DEFAULT_STREAM_IDLE_TIMEOUT = 60.0
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_HEARTBEAT_INTERVAL = 30.0
DEFAULT_OBSERVATIONS_INTERVAL = 10.0
DEFAULT_REFRESH_FRACTION = 0.8
DEFAULT_REFRESH_JITTER = 0.1
DEFAULT_SHUTDOWN_GRACE = 5.0
VERSION = "0.1.0"

Mode = Literal["explicit", "transparent"]


def parse_hostport(value: str, what: str) -> tuple[str, int]:
    """`127.0.0.1:15001` or `[::1]:15001` → (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{what} must be HOST:PORT, got {value!r}", field=what)
    return host.strip("[]"), int(port)


def parse_listen6(value: str, mode: str, listen: tuple[str, int]) -> tuple[tuple[str, int] | None, bool]:
    """``--listen6``: ``auto`` (transparent mode: ``[::1]`` on the listen port, best effort),
    ``off``, or ``[::1]:PORT`` (required: the proxy fails to start when it cannot bind it).

    Returns (address or None, required). Explicit mode has no IPv6 listener (apps dial the proxy
    by its ``--listen`` address); port 0 means the IPv4 listener's port.
    """
    text = value.strip().lower()
    if text in ("off", "false", "no", "none", ""):
        return None, False
    if text == "auto":
        return (("::1", listen[1]), False) if mode == "transparent" else (None, False)
    host, port = parse_hostport(value.strip(), "listen6")
    if ":" not in host:
        raise ConfigError(f"listen6 must be an IPv6 address, got {value!r}", field="listen6")
    return ((host, port), True) if mode == "transparent" else (None, False)


@dataclass(frozen=True, kw_only=True)
class ProxySettings:
    """Everything `sesame-proxy run` needs; built once by `from_namespace` and passed down."""

    control_plane: str
    token_file: Path = DEFAULT_TOKEN_FILE
    listen: tuple[str, int] = DEFAULT_LISTEN
    mode: Mode = "explicit"
    # Transparent mode's IPv6 listener (REDIRECTed IPv6 connections arrive on [::1]); None: none.
    listen6: tuple[str, int] | None = None
    listen6_required: bool = False  # False: a failed bind (no ::1 in the pod) only logs a warning
    admin: tuple[str, int] = DEFAULT_ADMIN
    ca_dir: Path = DEFAULT_CA_DIR
    upstream_ca_file: Path | None = None
    control_plane_ca: str | None = None
    pod_name: str = "unknown"
    version: str = VERSION
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    response_timeout: float = DEFAULT_RESPONSE_TIMEOUT
    upstream_idle_timeout: float = DEFAULT_UPSTREAM_IDLE_TIMEOUT
    client_idle_timeout: float = DEFAULT_CLIENT_IDLE_TIMEOUT
    stream_idle_timeout: float = DEFAULT_STREAM_IDLE_TIMEOUT
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    max_connections: int = 0  # 0: derived from RLIMIT_NOFILE (proxy/connection_limits.py)
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    observations_interval: float = DEFAULT_OBSERVATIONS_INTERVAL
    refresh_fraction: float = DEFAULT_REFRESH_FRACTION
    refresh_jitter: float = DEFAULT_REFRESH_JITTER
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if not self.control_plane.startswith(("http://", "https://")):
            raise ConfigError("control plane must be an http(s) URL", field="control_plane")
        if self.mode not in ("explicit", "transparent"):
            raise ConfigError("mode must be explicit or transparent", field="mode")
        if not 0.1 <= self.refresh_fraction < 1:
            raise ConfigError("refresh fraction must be in [0.1, 1)", field="refresh_fraction")
        for name in (
            "connect_timeout",
            "response_timeout",
            "upstream_idle_timeout",
            "client_idle_timeout",
            "stream_idle_timeout",
            "header_timeout",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive", field=name)
        if self.max_connections < 0:
            raise ConfigError("max_connections must be 0 (automatic) or positive", field="max_connections")

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> ProxySettings:
        if not ns.control_plane:
            raise ConfigError("--control-plane (SESAME_CONTROL_PLANE) is required", field="control_plane")
        listen = parse_hostport(ns.listen, "listen")
        listen6, required = parse_listen6(str(getattr(ns, "listen6", DEFAULT_LISTEN6)), ns.mode, listen)
        try:
            return cls(
                control_plane=ns.control_plane.rstrip("/"),
                token_file=Path(ns.token_file),
                listen=listen,
                mode=ns.mode,
                listen6=listen6,
                listen6_required=required,
                admin=parse_hostport(ns.admin, "admin"),
                ca_dir=Path(ns.ca_dir),
                upstream_ca_file=Path(ns.upstream_ca) if ns.upstream_ca else None,
                control_plane_ca=ns.control_plane_ca or None,
                pod_name=ns.pod_name,
                connect_timeout=float(ns.connect_timeout),
                response_timeout=float(ns.response_timeout),
                upstream_idle_timeout=float(ns.upstream_idle_timeout),
                stream_idle_timeout=float(ns.stream_idle_timeout),
                client_idle_timeout=float(ns.idle_timeout),
                header_timeout=float(ns.header_timeout),
                max_connections=int(ns.max_connections),
                heartbeat_interval=float(ns.heartbeat_interval),
                observations_interval=float(ns.observations_interval),
                log_level=ns.log_level.upper(),
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc


def add_run_arguments(parser: argparse.ArgumentParser, env: Mapping[str, str] | None = None) -> None:
    """Declare `run` flags; each defaults to its SESAME_* variable, then to the DEFAULT_* constant."""
    env = os.environ if env is None else env

    def flag(name: str, default: object, help_: str) -> None:
        var = "SESAME_" + name.upper().replace("-", "_")
        parser.add_argument(f"--{name}", default=env.get(var, default), help=f"{help_} (env {var})")

    flag("control-plane", "", "control plane base URL")
    flag("token-file", str(DEFAULT_TOKEN_FILE), "projected service-account token file")
    flag("listen", f"{DEFAULT_LISTEN[0]}:{DEFAULT_LISTEN[1]}", "proxy listen address")
    flag("mode", "explicit", "explicit (HTTP_PROXY) or transparent (REDIRECT)")
    flag("listen6", DEFAULT_LISTEN6, "transparent IPv6 listener: auto ([::1], same port), off or [::1]:PORT")
    flag("admin", f"{DEFAULT_ADMIN[0]}:{DEFAULT_ADMIN[1]}", "admin listen address (health, metrics, quit)")
    flag("ca-dir", str(DEFAULT_CA_DIR), "directory of the pod CA (created when missing)")
    flag("upstream-ca", "", "extra PEM roots trusted for upstream TLS, beside the system roots")
    flag("control-plane-ca", "", "PEM text or file of the CA that signed the control plane's certificate")
    flag("pod-name", env.get("HOSTNAME", "unknown"), "pod name reported in heartbeats")
    flag("connect-timeout", DEFAULT_CONNECT_TIMEOUT, "upstream connect timeout, seconds")
    flag("response-timeout", DEFAULT_RESPONSE_TIMEOUT, "wait for an upstream response head, seconds")
    flag("upstream-idle-timeout", DEFAULT_UPSTREAM_IDLE_TIMEOUT, "pooled upstream connection idle limit")
    flag("stream-idle-timeout", DEFAULT_STREAM_IDLE_TIMEOUT, "a body stalled this long either way is cut, s")
    flag("idle-timeout", DEFAULT_CLIENT_IDLE_TIMEOUT, "close a kept-alive app connection idle this long, s")
    flag("header-timeout", DEFAULT_HEADER_TIMEOUT, "an app must finish a request head within this, s")
    flag("max-connections", 0, "app connections at most (0: half the file descriptor limit)")
    flag("heartbeat-interval", DEFAULT_HEARTBEAT_INTERVAL, "seconds between heartbeats")
    flag("observations-interval", DEFAULT_OBSERVATIONS_INTERVAL, "seconds between observation batches")
    flag("log-level", "INFO", "log level")
