"""`make demo` runs end to end: 200 without a key, one audited denial, clean exit, nothing left running."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path


def processes_with(marker: bytes) -> list[str]:
    """PIDs whose environment carries `marker` (children inherit it, even when re-parented)."""
    found = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in env.read_bytes():
                found.append(env.parent.name)
        except OSError:
            continue
    return found


def test_demo_runs_clean():
    marker = f"SESAME_DEMO_TEST={uuid.uuid4().hex}"
    key, _, value = marker.partition("=")
    out = subprocess.run(
        [sys.executable, "-m", "devkit.demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, key: value},
    )
    assert out.returncode == 0, f"demo exited {out.returncode}:\n{out.stdout}\n{out.stderr[-3000:]}"
    assert "Policy/checkout-ledger created" in out.stdout  # registered by sesamectl apply -f
    assert "HTTP 200" in out.stdout
    assert '"error": "policy_denied"' in out.stdout and "HTTP 403" in out.stdout
    assert "token.issued" in out.stdout and "token.denied" in out.stdout
    # The AWS step: `aws s3 ls` through the proxy against moto (request authentication on).
    assert "$ aws s3 ls  (exit 0)" in out.stdout and "sesame-demo" in out.stdout, out.stdout
    assert processes_with(marker.encode()) == []
