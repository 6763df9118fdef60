"""The OpenAPI document is the truth: schemathesis (fixed seed, small example count) against a real
`sesame-controlplane serve` finds no server error and no schema-valid request the server rejects.

Custom formats (opaque cursors) are taught to schemathesis by tests/controlplane/schemathesis_hooks.py.
State the schema cannot know (an id that does not exist, a field of another provider type, a PATCH
that breaks a rule only together with the stored record) answers 404 or 409, which schemathesis
counts as accepted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devkit.controlplane_server import control_plane_process

ROOT = Path(__file__).resolve().parents[2]
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
# Schemathesis 4.32's coverage phase crashes inside itself (a KeyError while walking the schema)
# on this one operation; it gets the examples and fuzzing phases instead.
COVERAGE_CRASH = r"^/v1/admission/mutate/\{scope\}$"
UNLIMITED = {
    "SESAME_RATE_LIMIT": "1000000",
    "SESAME_EXCHANGE_RATE_LIMIT": "1000000",
    "SESAME_SOURCE_RATE": "1000000",
    "SESAME_SOURCE_BURST": "1000000",
}


def _schemathesis(url: str, key: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """One bounded run; its cache (`.schemathesis/`) goes to `cwd`, never into the repository."""
    command = [
        str(SCHEMATHESIS),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "not_a_server_error,positive_data_acceptance",
        "--max-examples",
        "10",
        "--seed",
        "20261129",
        "--workers",
        "2",
        "--header",
        f"Authorization: Bearer {key}",
        *args,
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.controlplane.schemathesis_hooks",
        "PYTHONPATH": str(ROOT),
        "NO_COLOR": "1",
    }
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=170)


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_valid_request_rejected(tmp_path) -> None:
    assert SCHEMATHESIS.exists(), "pip install -e '.[test]' installs schemathesis"
    with control_plane_process(tmp_path / "cp.db", env=UNLIMITED) as cp:
        runs = [
            _schemathesis(cp.url, cp.owner_key, tmp_path, "--exclude-path-regex", COVERAGE_CRASH),
            _schemathesis(
                cp.url,
                cp.owner_key,
                tmp_path,
                "--include-path-regex",
                COVERAGE_CRASH,
                "--phases",
                "examples,fuzzing",
            ),
        ]
    for run in runs:
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
        assert "generated" in run.stdout and " passed" in run.stdout
