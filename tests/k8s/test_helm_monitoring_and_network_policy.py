"""The chart's optional ServiceMonitor and NetworkPolicy (both off by default).

kubernetes-validate has no schema for the prometheus-operator CRD, so the ServiceMonitor is
checked structurally and then used for real: the control plane app serves HTTPS with the
chart-rendered certificate, and /metrics is scraped exactly as the ServiceMonitor tells Prometheus
to (scheme, path, CA from the referenced Secret key, serverName). The NetworkPolicy is validated
by kubernetes-validate in test_helm_chart.py; here its selectors and ports are matched against
the rendered Deployment and Service.
"""

from __future__ import annotations

import base64
import re
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes_validate
import pytest
from prometheus_client.parser import text_string_to_metric_families

from controlplane.app import create_app
from controlplane.config import Config
from controlplane.exchange_settings import ExchangeSettings
from devkit.controlplane_server import serving
from devkit.upstream import server_context

from .admission import K8S_VERSION
from .chart import FULLNAME, NAMESPACE, SERVICE_DNS, find, installed, kinds, render, template_process

PG_VALUES = "values-postgres-replicas.yaml"
DURATION = re.compile(r"^([0-9]+(ms|s|m|h))+$")
# Fields of a ServiceMonitor endpoint / tlsConfig the chart may use (monitoring.coreos.com/v1).
ENDPOINT_FIELDS = {"port", "path", "scheme", "interval", "scrapeTimeout", "tlsConfig"}
TLS_FIELDS = {"serverName", "ca", "cert", "keySecret", "insecureSkipVerify"}


def pod_labels(docs: list[dict[str, Any]]) -> dict[str, str]:
    return find(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]


def container_port(docs: list[dict[str, Any]]) -> int:
    [cp] = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    [port] = cp["ports"]
    return port["containerPort"]


def test_both_are_off_by_default(helm: Path):
    assert not {"ServiceMonitor", "NetworkPolicy"} & kinds(render(helm))


def test_service_monitor_selects_the_service_and_verifies_its_certificate(helm: Path):
    docs = installed(helm, PG_VALUES)
    monitor = find(docs, "ServiceMonitor")
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "ServiceMonitor")
    assert monitor["metadata"]["name"] == FULLNAME and monitor["metadata"]["namespace"] == NAMESPACE
    assert monitor["metadata"]["labels"]["release"] == "prometheus"  # metrics.serviceMonitor.labels
    assert set(monitor["spec"]) == {"selector", "namespaceSelector", "endpoints"}
    service = find(docs, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [service["metadata"]["namespace"]]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert set(endpoint) <= ENDPOINT_FIELDS and set(endpoint["tlsConfig"]) <= TLS_FIELDS
    [port] = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
    assert port["targetPort"] == "https"
    assert (endpoint["scheme"], endpoint["path"]) == ("https", "/metrics")
    assert endpoint["interval"] == "15s" and DURATION.match(endpoint["scrapeTimeout"])
    assert endpoint["tlsConfig"]["serverName"] == SERVICE_DNS
    assert "insecureSkipVerify" not in endpoint["tlsConfig"]
    ca = endpoint["tlsConfig"]["ca"]["secret"]
    assert ca["key"] in find(docs, "Secret", ca["name"])["data"]

    # Under cert-manager the same Secret (and its ca.crt) comes from the Certificate.
    certmanager = render(helm, "values-cert-manager.yaml", "metrics.serviceMonitor.enabled=true")
    ca = find(certmanager, "ServiceMonitor")["spec"]["endpoints"][0]["tlsConfig"]["ca"]["secret"]
    assert find(certmanager, "Certificate", f"{FULLNAME}-webhook")["spec"]["secretName"] == ca["name"]


async def test_metrics_scrape_as_the_service_monitor_describes(helm: Path, tmp_path):
    docs = installed(helm, PG_VALUES)
    [endpoint] = find(docs, "ServiceMonitor")["spec"]["endpoints"]
    tls = endpoint["tlsConfig"]
    secret = find(docs, "Secret", tls["ca"]["secret"]["name"])["data"]
    for name in ("tls.crt", "tls.key"):
        (tmp_path / name).write_bytes(base64.b64decode(secret[name]))
    config = Config(
        db_path=tmp_path / "cp.db",
        listen_port=0,
        kek=b"k" * 32,
        tls_cert=tmp_path / "tls.crt",
        tls_key=tmp_path / "tls.key",
        exchange=ExchangeSettings(issuer_url="https://sesame.example"),  # port 0: nothing to derive
    )
    client_ctx = ssl.create_default_context(
        cadata=base64.b64decode(secret[tls["ca"]["secret"]["key"]]).decode()
    )
    server_ctx = server_context(tmp_path / "tls.crt", tmp_path / "tls.key")
    async with (
        serving(create_app(config), ssl_context=server_ctx) as port,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ctx)) as session,
    ):
        url = f"{endpoint['scheme']}://127.0.0.1:{port}{endpoint['path']}"
        async with session.get(url, server_hostname=tls["serverName"]) as resp:
            assert resp.status == 200
            assert resp.content_type == "text/plain"
            body = await resp.text()
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.get(url, server_hostname="prometheus.example.com")
    families = {f.name for f in text_string_to_metric_families(body)}
    assert any(name.startswith("sesame_") for name in families), sorted(families)


def test_network_policy_admits_the_api_server_and_listed_peers_on_the_https_port(helm: Path):
    docs = render(helm, PG_VALUES)
    policy = find(docs, "NetworkPolicy")
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels(docs).items()
    assert spec["policyTypes"] == ["Ingress"]  # egress (database, upstream APIs) is left open
    api_server, peers = spec["ingress"]
    port = container_port(docs)
    for rule in (api_server, peers):
        assert rule["ports"] == [{"port": port, "protocol": "TCP"}]
    assert api_server["from"] == [{"ipBlock": {"cidr": "10.0.0.0/28"}}, {"ipBlock": {"cidr": "fd00:10::/64"}}]
    assert peers["from"][0] == {"namespaceSelector": {"matchLabels": {"sesame.dev/inject": "enabled"}}}
    assert peers["from"][1]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
    # The Service forwards to the very port the policy opens.
    assert find(docs, "Service")["spec"]["ports"][0]["targetPort"] == "https"

    # Default peers: every pod in every namespace (injected proxies live anywhere).
    default = find(
        render(helm, None, "networkPolicy.enabled=true", "networkPolicy.apiServerCIDRs={172.16.0.0/12}"),
        "NetworkPolicy",
    )
    assert default["spec"]["ingress"][1]["from"] == [{"namespaceSelector": {}}]


def test_network_policy_without_api_server_cidrs_fails_while_the_webhook_is_on(helm: Path):
    proc = template_process(helm, None, "networkPolicy.enabled=true")
    assert proc.returncode != 0
    assert (
        "networkPolicy.enabled=true blocks the API server's webhook calls unless "
        "networkPolicy.apiServerCIDRs lists their source addresses"
    ) in proc.stderr, proc.stderr
    # Without the webhook the API server never calls in: only the peers rule remains.
    docs = render(helm, None, "networkPolicy.enabled=true", "webhook.enabled=false")
    kubernetes_validate.validate(find(docs, "NetworkPolicy"), K8S_VERSION, strict=True)
    assert find(docs, "NetworkPolicy")["spec"]["ingress"] == [
        {"ports": [{"port": container_port(docs), "protocol": "TCP"}], "from": [{"namespaceSelector": {}}]}
    ]
