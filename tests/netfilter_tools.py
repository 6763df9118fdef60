"""Skips for tests that need netfilter tools: `make test` as root on a machine without them skips
these tests with the reason instead of failing (CI installs both)."""

from __future__ import annotations

import shutil

import pytest

__all__ = ["require_netfilter"]

_TOOLS = {"nft": "nft", "iptables": "iptables-restore"}


def require_netfilter(backend: str = "auto") -> None:
    """Skip the calling test unless `backend`'s tool (or, for "auto", either tool) is installed."""
    wanted = list(_TOOLS.values()) if backend == "auto" else [_TOOLS[backend]]
    if not any(shutil.which(tool) for tool in wanted):
        pytest.skip(f"needs {' or '.join(wanted)} (Debian: apt-get install nftables iptables)")
