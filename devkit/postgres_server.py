"""A throwaway PostgreSQL server for tests: initdb in a temp dir, served on a private unix socket.

with postgres_server() as pg:           # raises PostgresUnavailable when no binaries are installed
    pg.dsn("postgres")                   # postgresql://postgres@/postgres?host=<dir>&port=5432

No TCP port is opened (`listen_addresses=''`), so parallel runs never collide. initdb refuses to
run as root, so as root the server runs as the unprivileged `postgres` user (created if missing).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PostgresServer", "PostgresUnavailable", "find_bin_dir", "postgres_server"]

SERVER_USER = "postgres"
SOCKET_PORT = 5432  # only names the socket file: the server listens on no TCP address
COMMAND_TIMEOUT_SECONDS = 120
_FAST_UNSAFE = ("-c fsync=off -c synchronous_commit=off -c full_page_writes=off", "-c max_connections=200")


class PostgresUnavailable(Exception):
    """No PostgreSQL server binaries on this machine."""


@dataclass(frozen=True, kw_only=True)
class PostgresServer:
    socket_dir: Path
    port: int = SOCKET_PORT
    superuser: str = SERVER_USER

    def dsn(self, database: str) -> str:
        return f"postgresql://{self.superuser}@/{database}?host={self.socket_dir}&port={self.port}"


def find_bin_dir() -> Path | None:
    """The directory holding initdb/pg_ctl: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """initdb + pg_ctl start in a fresh temp dir; stopped and removed on exit."""
    bindir = find_bin_dir()
    if bindir is None:
        raise PostgresUnavailable(
            "PostgreSQL server binaries not found (initdb on PATH or /usr/lib/postgresql)"
        )
    root = Path(tempfile.mkdtemp(prefix="sesame-pg-"))
    runas = _run_as_unprivileged(root)
    data = root / "data"
    try:
        _run(
            [*runas, str(bindir / "initdb"), "-D", str(data), "-U", SERVER_USER, "--auth=trust", "--no-sync"]
        )
        options = f"-c listen_addresses='' -k {root} -p {SOCKET_PORT} {' '.join(_FAST_UNSAFE)}"
        _run([*runas, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"),
              "-o", options, "-w", "-t", "60", "start"])  # fmt: skip
        try:
            yield PostgresServer(socket_dir=root)
        finally:
            _run([*runas, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run_as_unprivileged(root: Path) -> list[str]:
    """The command prefix that drops root (and hands `root` to that user); empty when not root."""
    if os.geteuid() != 0:
        return []
    try:
        user = pwd.getpwnam(SERVER_USER)
    except KeyError:
        _run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER])
        user = pwd.getpwnam(SERVER_USER)
    os.chown(root, user.pw_uid, user.pw_gid)
    return ["runuser", "-u", SERVER_USER, "--"]


def _run(cmd: list[str]) -> None:
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_SECONDS, cwd="/", check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr or result.stdout}")
