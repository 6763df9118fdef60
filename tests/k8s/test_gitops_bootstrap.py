"""GitOps-safe chart: renders are byte-identical, and the stable Secrets are created once in the cluster
by the bootstrap hook Jobs (run here with the real `kubernetes` client against a fake apiserver that
speaks the apiserver's wire format: no cluster runs here)."""

from __future__ import annotations

import base64
import datetime
import ssl
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from controlplane import k8s_bootstrap
from controlplane.attest.kube import KubeApi

from .chart import CHART, FULLNAME, NAMESPACE, RELEASE, container_env, find, hook_args, render, values_args
from .fake_apiserver import fake_apiserver

VALUES = [None, "values-cert-manager.yaml", "values-explicit.yaml", "values-postgres-replicas.yaml"]
TLS, CA = f"{FULLNAME}-webhook-tls", f"{FULLNAME}-webhook-tls-ca"
NOW = datetime.datetime(2027, 1, 1, tzinfo=datetime.UTC)


def template(helm: Path, values: str | None) -> str:
    proc = subprocess.run(
        [str(helm), "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *values_args(values)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("values", VALUES, ids=["default", "cert-manager", "explicit", "postgres"])
def test_helm_template_twice_gives_identical_output(helm: Path, values: str | None):
    assert template(helm, values) == template(helm, values)


def test_hook_jobs_keep_exactly_the_secrets_the_deployment_reads(helm: Path):
    docs = render(helm)
    env = container_env(find(docs, "Deployment"))
    volumes = {v["name"]: v for v in find(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    for phase in ("pre", "post"):
        args = k8s_bootstrap._parser().parse_args(hook_args(docs, phase))
        assert args.namespace == NAMESPACE
        assert args.kek_secret == env["SESAME_KEK"]["secretKeyRef"]["name"]
        assert args.bootstrap_secret == env["SESAME_BOOTSTRAP_API_KEY"]["secretKeyRef"]["name"]
        assert args.tls_secret == volumes["tls"]["secret"]["secretName"]
        assert args.webhook == (FULLNAME if phase == "post" else "")
    job = find(docs, "Job", f"{FULLNAME}-bootstrap-pre")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert find(docs, "Job", f"{FULLNAME}-bootstrap-post")["metadata"]["annotations"]["helm.sh/hook"] == (
        "post-install,post-upgrade"
    )
    role = find(docs, "Role", f"{FULLNAME}-bootstrap")
    named = [r for r in role["rules"] if "resourceNames" in r]
    assert named == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [f"{FULLNAME}-kek", f"{FULLNAME}-bootstrap", TLS, CA],
            "verbs": ["get", "update"],
        }
    ]
    cluster_role = find(docs, "ClusterRole", f"{FULLNAME}-bootstrap")
    assert cluster_role["rules"] == [
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["mutatingwebhookconfigurations"],
            "resourceNames": [FULLNAME],
            "verbs": ["get", "patch"],
        }
    ]


def test_existing_secrets_and_cert_manager_are_left_to_their_owners(helm: Path):
    docs = render(helm, "values-cert-manager.yaml", "kek.existingSecret=vault-kek")
    args = k8s_bootstrap._parser().parse_args(hook_args(docs, "post"))
    assert (args.kek_secret, args.tls_secret, args.webhook) == ("", "", "")
    assert args.bootstrap_secret == f"{FULLNAME}-bootstrap"
    assert not [
        d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-bootstrap")
    ]


def _sync(api, kubeconfig: Path, docs, *, now: datetime.datetime = NOW) -> dict[str, str]:
    """One GitOps sync: PreSync Job, apply the manifests, PostSync Job."""
    cluster = k8s_bootstrap.Cluster(KubeApi(kubeconfig=str(kubeconfig)).client())
    done = k8s_bootstrap.run(
        k8s_bootstrap._parser().parse_args(hook_args(docs, "pre")), cluster, now=lambda: now
    )
    mwc = find(docs, "MutatingWebhookConfiguration")
    if mwc["metadata"]["name"] not in api.webhooks:
        api.webhooks[mwc["metadata"]["name"]] = mwc
    post = k8s_bootstrap._parser().parse_args(hook_args(docs, "post"))
    after = k8s_bootstrap.run(post, cluster, now=lambda: now)
    return {**after, **{name: what for name, what in done.items() if what != "kept"}}


def test_repeated_syncs_keep_the_kek_bootstrap_key_and_certificate(helm: Path, tmp_path):
    docs = render(helm)
    with fake_apiserver(tmp_path) as (api, kubeconfig):
        first = _sync(api, kubeconfig, docs)
        assert first[f"{FULLNAME}-kek"] == "created" and first[TLS] == "created"
        assert first[FULLNAME] == "ca-bundle-set"
        kek = api.secret_data(NAMESPACE, f"{FULLNAME}-kek")["kek"]
        assert len(base64.b64decode(kek, validate=True)) == 32
        key = api.secret_data(NAMESPACE, f"{FULLNAME}-bootstrap")["api-key"].decode()
        assert key.startswith("ses_") and len(key) == 44
        tls = api.secret_data(NAMESPACE, TLS)
        assert api.secrets[(NAMESPACE, TLS)]["type"] == "kubernetes.io/tls"
        bundles = {h["clientConfig"]["caBundle"] for h in api.webhooks[FULLNAME]["webhooks"]}
        assert bundles == {base64.b64encode(tls["ca.crt"]).decode()}
        ca = x509.load_pem_x509_certificate(tls["ca.crt"])
        leaf = x509.load_pem_x509_certificate(tls["tls.crt"])
        leaf.verify_directly_issued_by(ca)
        assert "tls.key" not in api.secret_data(NAMESPACE, CA) and "ca.key" not in tls  # CA key apart

        writes = len(api.writes())
        for _ in range(2):  # later syncs (and helm template re-renders) change nothing
            again = _sync(api, kubeconfig, render(helm))
            assert set(again.values()) <= {"kept", "ca-bundle-set"}
        assert len(api.writes()) == writes
        assert api.secret_data(NAMESPACE, f"{FULLNAME}-kek")["kek"] == kek
        assert api.secret_data(NAMESPACE, TLS) == tls


def test_leaf_is_renewed_under_the_same_ca_and_the_ca_rolls_over_with_overlap(helm: Path, tmp_path):
    docs = render(helm)  # certValidityDays 3650, leafValidityDays 90
    with fake_apiserver(tmp_path) as (api, kubeconfig):
        _sync(api, kubeconfig, docs)
        first = api.secret_data(NAMESPACE, TLS)
        # 61 days on, less than a third of the 90-day leaf is left: a new leaf, the same CA and caBundle.
        done = _sync(api, kubeconfig, docs, now=NOW + datetime.timedelta(days=61))
        assert done[TLS] == "renewed"
        second = api.secret_data(NAMESPACE, TLS)
        assert second["ca.crt"] == first["ca.crt"] and second["tls.crt"] != first["tls.crt"]
        x509.load_pem_x509_certificate(second["tls.crt"]).verify_directly_issued_by(
            x509.load_pem_x509_certificate(first["ca.crt"])
        )
        # 180 days before the CA ends (two leaves): a second CA joins the bundle; the leaf stays
        # under the old CA while that one covers it, so pods holding the old bundle keep working.
        late = NOW + datetime.timedelta(days=3650 - 170)
        _sync(api, kubeconfig, docs, now=late)
        overlap = api.secret_data(NAMESPACE, TLS)
        cas = x509.load_pem_x509_certificates(overlap["ca.crt"])
        assert len(cas) == 2 and cas[0] == x509.load_pem_x509_certificate(first["ca.crt"])
        assert x509.load_pem_x509_certificate(overlap["tls.crt"]).issuer == cas[0].subject
        hooks = api.webhooks[FULLNAME]["webhooks"]
        assert {base64.b64decode(h["clientConfig"]["caBundle"]) for h in hooks} == {overlap["ca.crt"]}
        # Once the old CA cannot cover a whole leaf, the leaf moves to the new one.
        _sync(api, kubeconfig, docs, now=late + datetime.timedelta(days=100))
        moved = api.secret_data(NAMESPACE, TLS)
        assert x509.load_pem_x509_certificate(moved["tls.crt"]).issuer == cas[1].subject
        # After the old CA expired it leaves the bundle.
        _sync(api, kubeconfig, docs, now=NOW + datetime.timedelta(days=3651))
        final = x509.load_pem_x509_certificates(api.secret_data(NAMESPACE, TLS)["ca.crt"])
        assert final == [cas[1]]


def test_created_certificate_serves_every_service_name(helm: Path, tmp_path):
    docs = render(helm)
    with fake_apiserver(tmp_path) as (api, kubeconfig):
        _sync(api, kubeconfig, docs)
        tls = api.secret_data(NAMESPACE, TLS)
    names = k8s_bootstrap._parser().parse_args(hook_args(docs, "pre")).dns_names.split(",")
    leaf = x509.load_pem_x509_certificate(tls["tls.crt"])
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(sans.get_values_for_type(x509.DNSName)) == sorted(names)
    ctx = ssl.create_default_context(cadata=tls["ca.crt"].decode())
    assert ctx.cert_store_stats()["x509_ca"] == 1


def test_a_chart_whose_ca_would_not_outlive_its_leaves_does_not_render(helm: Path):
    proc = subprocess.run(
        [str(helm), "template", RELEASE, str(CHART), "--set", "webhook.certValidityDays=100"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "must be at least 3 x webhook.leafValidityDays" in proc.stderr


def test_bootstrap_failure_is_logged_and_exits_non_zero(tmp_path, caplog):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        '{"apiVersion": "v1", "kind": "Config", "clusters": [{"name": "c", "cluster": {"server": '
        '"http://127.0.0.1:9"}}], "users": [{"name": "u", "user": {"token": "t"}}], "contexts": '
        '[{"name": "c", "context": {"cluster": "c", "user": "u"}}], "current-context": "c"}'
    )
    argv = ["--namespace=x", "--kek-secret=k", f"--kubeconfig={kubeconfig}"]
    assert k8s_bootstrap.main(argv) == 1
    assert "bootstrap failed" in caplog.text


@pytest.mark.parametrize("version", ["1.29", "1.31", "1.33"])
def test_hook_jobs_and_their_rbac_validate_strictly_on_every_supported_version(helm: Path, version: str):
    import kubernetes_validate

    docs = render(helm)
    hooks = [d for d in docs if "helm.sh/hook" in (d["metadata"].get("annotations") or {})]
    assert {d["kind"] for d in hooks} == {
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
        "Job",
    }
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_with_every_secret_brought_along_the_job_may_touch_no_secret(helm: Path):
    docs = render(
        helm,
        "values-cert-manager.yaml",
        "kek.existingSecret=vault-kek",
        "bootstrapApiKey.existingSecret=vault-key",
    )
    # An empty resourceNames would grant every Secret of the namespace: no rule at all instead.
    assert find(docs, "Role", f"{FULLNAME}-bootstrap")["rules"] == []
    args = k8s_bootstrap._parser().parse_args(hook_args(docs, "pre"))
    assert (args.kek_secret, args.bootstrap_secret, args.tls_secret) == ("", "", "")
