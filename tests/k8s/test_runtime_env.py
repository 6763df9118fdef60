"""What the webhook gives each runtime: Java's proxy properties and full trust store, Node's env proxy,
NO_PROXY with the cluster's names and CIDRs, and one rule for a container that has its own proxy."""

from __future__ import annotations

import json

import pytest
from cryptography import x509

from controlplane.injector import review
from controlplane.injector_runtimes import java_non_proxy_hosts
from controlplane.injector_spec import InjectorSettings
from proxy.pkcs12_truststore import trust_entries
from proxy.tls import system_roots_file

from .admission import container, env_of, patched, review_of
from .corpus import corpus_pod
from .test_admission_https import Webhook
from .test_admission_https import webhook as webhook  # fixture

SETTINGS = InjectorSettings(cluster_cidrs=("10.244.0.0/16", "10.96.0.0/12"))
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


def injected(name: str, settings: InjectorSettings = SETTINGS, **annotations: str):
    pod = corpus_pod(name)
    pod["metadata"]["annotations"].update(annotations)
    doc = review_of(pod, namespace="apps")
    response, outcome = review(doc, settings, namespace_opted_in=False)
    return patched(doc, response), outcome


def java_props(options: str) -> dict[str, str]:
    return dict(o[2:].split("=", 1) for o in options.split() if o.startswith("-D"))


def test_no_proxy_names_the_cluster_in_both_spellings():
    result, _ = injected("node")
    env = env_of(container(result, "storefront"))
    entries = env["NO_PROXY"].split(",")
    assert env["no_proxy"] == env["NO_PROXY"]
    for entry in ("localhost", "127.0.0.1", "::1", "kubernetes.default.svc", ".svc", ".cluster.local"):
        assert entry in entries
    assert {"10.244.0.0/16", "10.96.0.0/12"} <= set(entries)
    custom = InjectorSettings(cluster_domain="corp.internal")
    env = env_of(container(injected("node", custom)[0], "storefront"))
    assert ".corp.internal" in env["NO_PROXY"].split(",") and ".cluster.local" not in env["NO_PROXY"]


def test_node_gets_its_env_proxy_switch_in_explicit_mode_only():
    explicit = env_of(container(injected("node")[0], "storefront"))
    assert explicit["NODE_USE_ENV_PROXY"] == "1"
    assert explicit["NODE_EXTRA_CA_CERTS"] == "/var/run/sesame/trust/ca-bundle.pem"
    transparent = env_of(container(injected("node", **{"sesame.dev/mode": "transparent"})[0], "storefront"))
    assert "NODE_USE_ENV_PROXY" not in transparent and "HTTPS_PROXY" not in transparent


def test_java_gets_the_proxy_properties_and_non_proxy_hosts_in_explicit_mode():
    result, _ = injected("java", **{"sesame.dev/mode": "explicit"})
    options = env_of(container(result, "ledger"))["JAVA_TOOL_OPTIONS"]
    assert options.startswith("-XX:MaxRAMPercentage=75 ")  # the app's own options stay first
    props = java_props(options)
    assert (props["https.proxyHost"], props["https.proxyPort"]) == ("127.0.0.1", "16001")
    assert (props["http.proxyHost"], props["http.proxyPort"]) == ("127.0.0.1", "16001")
    hosts = props["http.nonProxyHosts"].split("|")
    assert {"localhost", "127.0.0.1", "[::1]", "kubernetes.default.svc", "*.svc", "*.cluster.local"} <= set(
        hosts
    )
    assert "10.244.*" in hosts and {f"10.{n}.*" for n in range(96, 112)} <= set(hosts)
    assert props["javax.net.ssl.trustStore"] == "/var/run/sesame/trust/truststore.p12"
    transparent = java_props(env_of(container(injected("java")[0], "ledger"))["JAVA_TOOL_OPTIONS"])
    assert "https.proxyHost" not in transparent and "javax.net.ssl.trustStore" in transparent


@pytest.mark.parametrize(
    ("entry", "patterns"),
    [
        ("10.0.0.0/8", ["10.*"]),
        ("10.96.0.0/12", [f"10.{n}.*" for n in range(96, 112)]),
        ("192.168.1.0/24", ["192.168.1.*"]),
        ("172.16.0.0/20", [f"172.16.{n}.*" for n in range(16)]),
        ("10.0.0.0/9", ["10.*"]),  # 128 octet patterns: widened to the /8
        ("192.0.2.7", ["192.0.2.7"]),
        (".corp.internal", ["*.corp.internal"]),
        ("fd00:10::/64", ["[fd00:10:0:0:*"]),
    ],
)
def test_no_proxy_entries_become_java_patterns(entry, patterns):
    assert java_non_proxy_hosts((entry,)) == patterns


def test_container_with_its_own_proxy_keeps_it_in_both_spellings_and_is_warned():
    result, outcome = injected("own-http-proxy")
    env = env_of(container(result, "crawler"))
    assert env["HTTP_PROXY"] == env["HTTPS_PROXY"] == "http://proxy.corp.internal:3128"
    assert env["NO_PROXY"] == ".corp.internal"
    for absent in ("http_proxy", "https_proxy", "no_proxy", "NODE_USE_ENV_PROXY"):
        assert absent not in env, absent  # Python would otherwise pick sesame and lose .corp.internal
    assert "https.proxyHost" not in env["JAVA_TOOL_OPTIONS"]
    assert env["SSL_CERT_FILE"] == "/var/run/sesame/trust/ca-bundle.pem"  # trust still added
    [warning] = [w for w in outcome.warnings if "its own proxy" in w]
    assert "HTTP_PROXY, HTTPS_PROXY, NO_PROXY" in warning and "get no sesame credential" in warning
    assert not [w for w in outcome.warnings if "left it unchanged" in w]


@pytest.mark.parametrize(
    "own",
    [
        [{"name": "https_proxy", "value": "http://proxy.corp.internal:3128"}],
        [{"name": "no_proxy", "value": ".corp.internal"}],
        [
            {
                "name": "JAVA_TOOL_OPTIONS",
                "value": "-Dhttps.proxyHost=proxy.corp.internal -Dhttps.proxyPort=3128",
            }
        ],
    ],
)
def test_any_single_proxy_setting_counts_as_its_own_proxy(own):
    pod = corpus_pod("node")
    pod["spec"]["containers"][0]["env"] = own
    doc = review_of(pod, namespace="apps")
    response, outcome = review(doc, SETTINGS, namespace_opted_in=False)
    env = env_of(container(patched(doc, response), "storefront"))
    assert not [
        v for v in (*PROXY_VARS, "NODE_USE_ENV_PROXY") if v in env and v not in {e["name"] for e in own}
    ]
    assert "-Dhttps.proxyHost=127.0.0.1" not in env.get("JAVA_TOOL_OPTIONS", "")
    assert any("its own proxy" in w for w in outcome.warnings)


async def test_own_proxy_warning_reaches_the_admission_response_and_the_audit_row(webhook: Webhook):
    doc = review_of(corpus_pod("own-http-proxy"), namespace="apps")
    status, body = await webhook.post(doc)
    assert status == 200
    assert any("its own proxy" in w for w in body["response"]["warnings"])
    [event] = await webhook.audit("admission.injected")
    extra = event["extra"] if isinstance(event["extra"], dict) else json.loads(event["extra"])
    assert any("sets its own proxy (HTTP_PROXY, HTTPS_PROXY, NO_PROXY)" in w for w in extra["warnings"])


def test_java_trust_store_holds_the_system_roots_and_the_pod_ca():
    roots = open(system_roots_file(), "rb").read()
    ca = roots.split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n"
    entries = trust_entries(roots, ca)
    assert len(roots.split(b"-----BEGIN CERTIFICATE-----")) - 1 >= len(entries) - 1 > 100
    assert entries[-1][0] == "sesame-pod-ca"
    assert len({alias.lower() for alias, _ in entries}) == len(entries)
    assert isinstance(entries[0][1], x509.Certificate)


def test_placeholder_aws_keys_only_for_containers_without_aws_credentials_of_their_own():
    """Unmodified AWS SDKs sign with the placeholders, the proxy re-signs (aws-sigv4 targets); a
    container with its own AWS credentials (keys, profile, IRSA, container endpoint) keeps them."""
    env = env_of(container(injected("node")[0], "storefront"))
    assert env["AWS_ACCESS_KEY_ID"] == "SESAME-PLACEHOLDER-KEY-ID"
    assert "placeholder" in env["AWS_SECRET_ACCESS_KEY"]
    for own in ("AWS_ROLE_ARN", "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        pod = corpus_pod("node")
        [app] = [c for c in pod["spec"]["containers"] if c["name"] == "storefront"]
        app.setdefault("env", []).append({"name": own, "value": "mine"})
        doc = review_of(pod, namespace="apps")
        response, _ = review(doc, SETTINGS, namespace_opted_in=False)
        env = env_of(container(patched(doc, response), "storefront"))
        assert "AWS_SECRET_ACCESS_KEY" not in env, own
        assert env.get("AWS_ACCESS_KEY_ID") == ("mine" if own == "AWS_ACCESS_KEY_ID" else None), own
