"""Control plane settings, built and validated once from flags and `SESAME_*` variables.

Flags win over environment variables; nothing else in the package reads the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controlplane.envelope import load_kek
from controlplane.errors import StartupError
from controlplane.exchange_settings import ExchangeSettings
from controlplane.injector_spec import InjectorSettings
from controlplane.outbound import OutboundPolicy
from controlplane.source_limits import SourceLimitSettings
from controlplane.store.dsn import is_postgres_dsn, redact_dsn
from controlplane.store.sqlite.db import SYNCHRONOUS_MODES

__all__ = [
    "DEFAULT_AUDIT_BATCH_MAX",
    "DEFAULT_DB",
    "DEFAULT_LISTEN",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_RATE_LIMIT_PER_MINUTE",
    "Config",
    "parse_listen",
]

DEFAULT_DB = Path("sesame.db")
DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_RATE_LIMIT_PER_MINUTE = 120
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_AUDIT_BATCH_MAX = 500
DEFAULT_AUDIT_EXPORT_MAX_ROWS = 50_000  # rows one /v1/audit/export sends at most (X-Next-Cursor continues)
DEFAULT_AUDIENCE = "sesame"
MIN_API_KEY_RANDOM = 32
_UNSPECIFIED_HOSTS = frozenset({"", "0.0.0.0", "::", "0:0:0:0:0:0:0:0"})


@dataclass(frozen=True, kw_only=True)
class Config:
    db_path: Path = DEFAULT_DB
    db_dsn: str | None = field(default=None, repr=False)  # postgresql://...; wins over db_path
    sqlite_synchronous: str = "full"  # "normal" trades power-loss durability for throughput
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    tls_cert: Path | None = None
    tls_key: Path | None = None
    kek: bytes | None = field(default=None, repr=False)
    kek_previous: tuple[bytes, ...] = field(default=(), repr=False)
    bootstrap_api_key: str | None = field(default=None, repr=False)
    rate_limit_per_minute: int = DEFAULT_RATE_LIMIT_PER_MINUTE
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    audit_batch_max: int = DEFAULT_AUDIT_BATCH_MAX
    audit_export_max_rows: int = DEFAULT_AUDIT_EXPORT_MAX_ROWS  # may only lower the API's ceiling
    audience: str = DEFAULT_AUDIENCE
    log_level: str = "INFO"
    injector: InjectorSettings = field(default_factory=InjectorSettings)  # admission webhook (K8s)
    exchange: ExchangeSettings = field(default_factory=ExchangeSettings)  # token exchange, proxy routes
    outbound: OutboundPolicy = field(default_factory=OutboundPolicy)  # SESAME_OUTBOUND_ALLOW
    source_limits: SourceLimitSettings = field(default_factory=SourceLimitSettings)  # pre-auth, per address

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise StartupError("--tls-cert and --tls-key must be given together")
        if self.rate_limit_per_minute < 1:
            raise StartupError("rate limit must be at least 1 request per minute")
        if self.sqlite_synchronous not in SYNCHRONOUS_MODES:
            raise StartupError("SESAME_SQLITE_SYNCHRONOUS must be full or normal")
        if not 1 <= self.audit_export_max_rows <= DEFAULT_AUDIT_EXPORT_MAX_ROWS:
            raise StartupError(f"audit export cap must be between 1 and {DEFAULT_AUDIT_EXPORT_MAX_ROWS} rows")
        if self.max_body_bytes < 1024:
            raise StartupError("max body size must be at least 1024 bytes")
        key = self.bootstrap_api_key
        if key is not None and (not key.startswith("ses_") or len(key) < 4 + MIN_API_KEY_RANDOM):
            raise StartupError(
                f"SESAME_BOOTSTRAP_API_KEY must be ses_ followed by >= {MIN_API_KEY_RANDOM} chars"
            )

    @property
    def db_location(self) -> Path | str:
        """What `controlplane.store.new_store` opens: the PostgreSQL DSN, else the SQLite path."""
        return self.db_dsn or self.db_path

    @property
    def db_label(self) -> str:
        """The database for messages (no password)."""
        return redact_dsn(self.db_dsn) if self.db_dsn else str(self.db_path)

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    @property
    def issuer_url(self) -> str:
        """The `iss` of signed JWTs and OIDC discovery: SESAME_ISSUER_URL, else the listen address.

        Never taken from a request. StartupError when neither says where clients reach us.
        """
        return self.issuer()[0]

    def issuer(self) -> tuple[str, str]:
        """(issuer URL, how it was chosen) for the start-up message."""
        if self.exchange.issuer_url:
            return self.exchange.issuer_url, "SESAME_ISSUER_URL"
        host = self.listen_host
        if host in _UNSPECIFIED_HOSTS or self.listen_port == 0:
            raise StartupError(
                f"set SESAME_ISSUER_URL (--issuer-url) to the URL clients reach the control plane at: "
                f"it cannot be derived from the listen address {host}:{self.listen_port}"
            )
        shown = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{shown}:{self.listen_port}", "the listen address and TLS settings"

    @classmethod
    def build(cls, flags: Mapping[str, Any], env: Mapping[str, str]) -> Config:
        """Merge flags (None = not given) over `SESAME_*` env vars over defaults."""

        def pick(flag: str, var: str) -> Any:
            value = flags.get(flag)
            return value if value is not None else (env.get(var) or None)

        host, port = parse_listen(pick("listen", "SESAME_LISTEN") or DEFAULT_LISTEN)
        kek_file = pick("kek_file", "SESAME_KEK_FILE")
        kek = load_kek(path=Path(kek_file)) if kek_file else load_kek(value=env.get("SESAME_KEK"))
        previous = tuple(
            k
            for text in (env.get("SESAME_KEK_PREVIOUS") or "").split(",")
            if text.strip()
            for k in [load_kek(value=text, source="SESAME_KEK_PREVIOUS")]
            if k is not None
        )
        cert, key = pick("tls_cert", "SESAME_TLS_CERT"), pick("tls_key", "SESAME_TLS_KEY")
        db = str(pick("db", "SESAME_DB") or DEFAULT_DB)
        audience = pick("audience", "SESAME_AUDIENCE")
        dsn = db if is_postgres_dsn(db) else None
        return cls(
            db_path=DEFAULT_DB if dsn else Path(db),
            db_dsn=dsn,
            sqlite_synchronous=(pick("sqlite_synchronous", "SESAME_SQLITE_SYNCHRONOUS") or "full").lower(),
            listen_host=host,
            listen_port=port,
            tls_cert=Path(cert) if cert else None,
            tls_key=Path(key) if key else None,
            kek=kek,
            kek_previous=previous,
            bootstrap_api_key=env.get("SESAME_BOOTSTRAP_API_KEY") or None,
            rate_limit_per_minute=_int(
                pick("rate_limit", "SESAME_RATE_LIMIT"), DEFAULT_RATE_LIMIT_PER_MINUTE, "SESAME_RATE_LIMIT"
            ),
            max_body_bytes=_int(
                pick("max_body_bytes", "SESAME_MAX_BODY_BYTES"),
                DEFAULT_MAX_BODY_BYTES,
                "SESAME_MAX_BODY_BYTES",
            ),
            audience=audience or DEFAULT_AUDIENCE,
            log_level=(pick("log_level", "SESAME_LOG_LEVEL") or "INFO").upper(),
            injector=InjectorSettings.build(env, audience=audience),
            exchange=ExchangeSettings.build(flags, env, audience=audience or DEFAULT_AUDIENCE),
            outbound=OutboundPolicy.parse(pick("outbound_allow", "SESAME_OUTBOUND_ALLOW")),
            source_limits=SourceLimitSettings.build(env),
        )


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` (or `[v6]:PORT`) → (host, port); port 0 picks a free one."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise StartupError(f"listen address must be HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def _int(value: Any, default: int, name: str) -> int:
    if value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise StartupError(f"{name} must be an integer") from None
