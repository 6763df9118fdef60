"""The chart refuses values a cluster would choke on later, and declares the Kubernetes it needs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from controlplane.injector_spec import InjectorSettings, proxy_env

from .chart import CHART, RELEASE, find, literal_env, render

SCHEMA_ERROR = "values don't meet the specifications of the schema"


def template(helm: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(helm), "template", RELEASE, str(CHART), *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "bad",
    [
        "injector.excludeCIDRs={10.0.0.0/33}",
        "injector.excludeCIDRs={300.1.2.3/8}",
        "injector.excludeCIDRs={fd00::/129}",
        "injector.excludeCIDRs={10.0.0.0/8 }",
        "webhook.excludeNamespaces={Bad_NS}",
        "webhook.excludeNamespaces={-leading-dash}",
        "resources.requests.cpu=abc",
        "resources.limits.memory=lots",
        "replicaCount=0",
        "networkPolicy.apiServerCIDRs={10.0.0.0/40}",
        "injector.proxyPort=0",
        "injector.proxyUID=0",
        "injector.noProxy={a b}",
    ],
)
def test_schema_refuses_invalid_values(helm: Path, bad: str):
    proc = template(helm, "--set", bad)
    assert proc.returncode != 0, bad
    assert SCHEMA_ERROR in proc.stderr, proc.stderr


def test_schema_accepts_the_valid_forms(helm: Path):
    proc = template(
        helm,
        "--set",
        "injector.excludeCIDRs={10.0.0.0/8,192.0.2.7,fd00::/8,fd00:10::1}",
        "--set",
        "webhook.excludeNamespaces={monitoring,team-a}",
        "--set",
        "resources.requests.cpu=250m,resources.limits.memory=1Gi",
        "--set",
        "networkPolicy.apiServerCIDRs={10.0.0.0/28}",
    )
    assert proc.returncode == 0, proc.stderr


def test_proxy_port_and_admin_port_must_differ(helm: Path):
    proc = template(helm, "--set", "injector.proxyPort=17000", "--set", "injector.adminPort=17000")
    assert proc.returncode != 0 and "injector.proxyPort and injector.adminPort are both 17000" in proc.stderr


def test_kube_version_matches_native_sidecars(helm: Path):
    assert 'kubeVersion: ">=1.29.0-0"' in (CHART / "Chart.yaml").read_text()
    old = template(helm, "--kube-version", "1.28.9")
    assert old.returncode != 0 and "kubeVersion" in old.stderr
    assert template(helm, "--kube-version", "1.29.0").returncode == 0


def test_ports_and_uid_follow_chart_values(helm: Path):
    default = InjectorSettings.build(literal_env(find(render(helm), "Deployment")))
    assert (default.proxy_port, default.admin_port, default.proxy_uid) == (16001, 16020, 16001)
    custom = find(
        render(helm, None, "injector.proxyPort=17001", "injector.adminPort=17020", "injector.proxyUID=4242"),
        "Deployment",
    )
    settings = InjectorSettings.build(literal_env(custom))
    assert (settings.proxy_port, settings.admin_port, settings.proxy_uid) == (17001, 17020, 4242)


def test_proxy_max_connections_flows_from_the_chart_to_the_proxy(helm: Path):
    """injector.proxyMaxConnections → the webhook's settings → SESAME_MAX_CONNECTIONS in the sidecar."""
    assert "SESAME_MAX_CONNECTIONS" not in {e["name"] for e in proxy_env(InjectorSettings(), mode="explicit")}
    custom = find(render(helm, None, "injector.proxyMaxConnections=500"), "Deployment")
    settings = InjectorSettings.build(literal_env(custom))
    env = {e["name"]: e.get("value") for e in proxy_env(settings, mode="transparent")}
    assert env["SESAME_MAX_CONNECTIONS"] == "500"
    bad = template(helm, "--set", "injector.proxyMaxConnections=-1")
    assert bad.returncode != 0 and "proxyMaxConnections" in bad.stderr
