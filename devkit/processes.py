"""Child processes of tests and the demo: stopped politely, then forcibly, never left behind."""

from __future__ import annotations

import subprocess

__all__ = ["DEFAULT_STOP_SECONDS", "stop_process"]

DEFAULT_STOP_SECONDS = 10.0


def stop_process(proc: subprocess.Popen, *, grace_seconds: float = DEFAULT_STOP_SECONDS) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `grace_seconds`; a no-op if already gone."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
