"""Run `sesame-proxy run` as a real subprocess (for memory, signals and /quitquitquit)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ProxyProcess:
    proc: asyncio.subprocess.Process
    listen: tuple[str, int]
    admin: tuple[str, int]

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

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode or 0


def _addr(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host, int(port)


async def start_proxy_process(*args: str, env: dict[str, str] | None = None) -> ProxyProcess:
    """Start the proxy on ports 0 and read the bound addresses from its "proxy started" log line."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy.main",
        "run",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
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
            asyncio.get_running_loop().create_task(_drain(proc.stderr))
            return ProxyProcess(proc, _addr(record["listen"]), _addr(record["admin"]))
    proc.kill()
    await proc.wait()
    raise AssertionError("proxy did not start:\n" + "".join(lines))


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass
