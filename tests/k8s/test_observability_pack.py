"""The chart's observability pack: alert rules, Grafana dashboard, PodMonitor.

The rules are linted and unit-tested with Prometheus' own `promtool` (Debian's `prometheus`,
installed by .ci/run); every PromQL expression of the dashboard is checked by promtool too (as
recording rules). Every metric the dashboard and the rules use must be one the control plane or
the proxy exports. kubernetes-validate has no schema for the prometheus-operator CRDs: the
PodMonitor and PrometheusRule are checked structurally, the dashboard ConfigMap strictly.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from controlplane.injector_spec import PROXY_NAME
from controlplane.metrics import Metrics as ControlPlaneMetrics
from proxy.metrics import Metrics as ProxyMetrics

from .admission import K8S_VERSION
from .chart import CHART, FULLNAME, NAMESPACE, find, kinds, render

RULES = CHART / "rules" / "sesame.rules.yaml"
DASHBOARD = CHART / "dashboards" / "sesame.json"
RULE_TESTS = Path(__file__).with_name("testdata") / "sesame.rules.test.yaml"
ENABLED = (
    "metrics.podMonitor.enabled=true",
    "metrics.prometheusRule.enabled=true",
    "metrics.dashboard.enabled=true",
)


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return found


def exported_metric_names() -> set[str]:
    """Every series name the control plane and the proxy can export."""
    names = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    metrics = ControlPlaneMetrics()
    metrics.audit_verified(True, 0.0)  # exported once a verification ran
    for family in metrics.registry.collect():
        names |= {family.name + s for s in suffixes[family.type]}
    for family in ProxyMetrics()._families:
        base = family.name
        names |= {base + s for s in suffixes[family.kind]} if family.kind == "histogram" else {base}
    return names


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p["targets"]]


def rule_exprs() -> list[str]:
    return [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_rules_pass_promtool_check(promtool: str):
    out = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_alerts_fire_when_they_should_and_only_then(promtool: str, tmp_path: Path):
    """promtool's rule unit tests: synthetic series in, expected alerts out."""
    shutil.copy(RULES, tmp_path / "sesame.rules.yaml")
    shutil.copy(RULE_TESTS, tmp_path / "tests.yaml")
    out = subprocess.run(
        [promtool, "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_alert_named_in_the_issue_has_a_rule_and_a_unit_test():
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert {
        "SesameExchangeErrorRatioHigh",
        "SesameProxiesNotReporting",
        "SesameCredentialNearExpiryWithoutRefresh",
        "SesameAuditChainBroken",
        "SesameCertificateExpiringSoon",
    } <= alerts
    tested = {
        a["alertname"] for t in yaml.safe_load(RULE_TESTS.read_text())["tests"] for a in t["alert_rule_test"]
    }
    assert alerts == tested
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("warning", "critical")
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path):
    exprs = dashboard_exprs()
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query{i}", "expr": e.replace("$__rate_interval", "5m")}
                    for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    (tmp_path / "dashboard.rules.yaml").write_text(yaml.safe_dump(rules))
    out = subprocess.run(
        [promtool, "check", "rules", str(tmp_path / "dashboard.rules.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_dashboard_and_rules_use_only_exported_metrics():
    exported = exported_metric_names()
    used = {m for e in dashboard_exprs() + rule_exprs() for m in re.findall(r"\bsesame_[a-z_]+", e)}
    assert used and used <= exported, sorted(used - exported)


def test_dashboard_shows_what_the_issue_asks_for():
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "sesame-overview" and board["schemaVersion"] >= 36
    [variable] = board["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["title"] and panel["targets"]
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"panel {panel['title']} overlaps another"
        cells |= mine
    exprs = " ".join(dashboard_exprs())
    for metric in (
        "sesame_proxy_requests_total",  # exchanges by outcome
        "sesame_proxy_exchange_seconds_bucket",  # latency
        "sesame_proxy_credential_cache_total",  # cache hit ratio
        "sesame_credential_expiry_timestamp_seconds",  # credential freshness per target
        "sesame_proxies",  # proxies seen
        "sesame_audit_lag_seconds_bucket",  # audit lag
    ):
        assert metric in exprs


def test_pack_is_off_by_default(helm: Path):
    assert not {"PodMonitor", "PrometheusRule"} & kinds(render(helm))
    assert not [
        d for d in render(helm) if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")
    ]


def test_chart_renders_rules_dashboard_and_pod_monitor(helm: Path):
    docs = render(helm, None, *ENABLED)
    rule = find(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["metadata"]["namespace"] == NAMESPACE
    assert rule["spec"] == yaml.safe_load(RULES.read_text())  # the linted file, unchanged by templating
    board = find(docs, "ConfigMap", f"{FULLNAME}-dashboard")
    kubernetes_validate.validate(board, K8S_VERSION, strict=True)
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(board["data"]["sesame.json"]) == json.loads(DASHBOARD.read_text())
    monitor = find(docs, "PodMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["scheme"]) == ("sesame-admin", "/metrics", "http")


def test_pod_monitor_scrapes_the_port_the_injector_names(helm: Path):
    """The injected sidecar declares the port the PodMonitor names, in the container the rules match."""
    from controlplane.injector_spec import InjectorSettings, Resources, proxy_container

    docs = render(helm, None, *ENABLED, "metrics.podMonitor.namespaces={team-a}")
    monitor = find(docs, "PodMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["team-a"]}
    container: dict[str, Any] = proxy_container(
        InjectorSettings.build({}), mode="explicit", resources=Resources(), native=False
    )
    assert container["name"] == PROXY_NAME == "sesame-proxy"
    assert "sesame-admin" in {p["name"] for p in container["ports"]}
    assert all('container="sesame-proxy"' in e for e in rule_exprs() if "up{" in e)
