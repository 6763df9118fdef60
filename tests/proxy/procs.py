"""Run `sesame-proxy run` as a real subprocess (for memory, signals and /quitquitquit)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from tests.proxy.conftest import Pki


@dataclass
class ProxyProcess:
    proc: asyncio.subprocess.Process
    listen: tuple[str, int]
    admin: tuple[str, int]
    logs: list[dict] = field(default_factory=list)

    async def wait_for_log(self, msg: str, attempts: int = 400) -> dict:
        for _ in range(attempts):
            for record in self.logs:
                if record.get("msg") == msg:
                    return record
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {msg!r} log line; got {self.logs}")

    @property
    def url(self) -> str:
        return f"http://{self.listen[0]}:{self.listen[1]}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin[0]}:{self.admin[1]}"

    def status(self, field: str) -> int:
        """A /proc/<pid>/status field in KiB (VmRSS, VmHWM)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    async def wait_ready(self, attempts: int = 200) -> httpx.Response:
        """The first 200 from /readyz, polled every 50 ms; after `attempts` polls, the last answer."""
        async with httpx.AsyncClient(timeout=5) as client:
            for _ in range(attempts):
                resp = await client.get(self.admin_url + "/readyz")
                if resp.status_code == 200:
                    break
                await asyncio.sleep(0.05)
        return resp

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode or 0


def governed_args(control_plane: str, token_file: Path, pki: Pki) -> list[str]:
    """`run` flags for a proxy that asks `control_plane` for routes and trusts the test PKI."""
    return [
        "--control-plane",
        control_plane,
        "--token-file",
        str(token_file),
        "--ca-dir",
        str(pki.ca_dir),
        "--upstream-ca",
        str(pki.dev_ca_file),
    ]


def _addr(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host, int(port)


async def start_proxy_process(
    *args: str,
    env: dict[str, str] | None = None,
    prefix: tuple[str, ...] = (),
    listen: str = "127.0.0.1:0",
    admin: str = "127.0.0.1:0",
) -> ProxyProcess:
    """Start the proxy (after `prefix`, e.g. `ip netns exec`) and read its bound addresses from the log."""
    proc = await asyncio.create_subprocess_exec(
        *prefix,
        sys.executable,
        "-m",
        "proxy.main",
        "run",
        "--listen",
        listen,
        "--admin",
        admin,
        *args,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    assert proc.stderr is not None
    lines = []
    for _ in range(200):
        line = await asyncio.wait_for(proc.stderr.readline(), 20)
        if not line:
            break
        lines.append(line.decode())
        record = json.loads(line)
        if record.get("msg") == "proxy started":
            started = ProxyProcess(proc, _addr(record["listen"]), _addr(record["admin"]), [record])
            asyncio.get_running_loop().create_task(_drain(proc.stderr, started.logs))
            return started
    proc.kill()
    await proc.wait()
    raise AssertionError("proxy did not start:\n" + "".join(lines))


async def _drain(stream: asyncio.StreamReader, logs: list[dict]) -> None:
    while line := await stream.readline():
        try:
            logs.append(json.loads(line))
        except ValueError:
            logs.append({"raw": line.decode(errors="replace")})
