"""The admission webhook's pure logic on real AdmissionReview documents.

Every patched pod is produced by applying the returned JSONPatch with ``jsonpatch`` and validated
with ``kubernetes.client.V1Pod.model_validate`` and ``kubernetes_validate`` (strict, 1.32).
"""

from __future__ import annotations

import base64
import json

import pytest

from controlplane.errors import InvalidRequest, StartupError
from controlplane.injector import escape_pointer, review
from controlplane.injector_spec import InjectorSettings, Resources

from .admission import container, deployment_review, env_of, patched, pod, review_of

SETTINGS = InjectorSettings(
    control_plane_url="https://sesame.sesame-system.svc:443",
    proxy_image="registry.example.com/sesame-proxy:0.1.0",
)
BUNDLE = "/var/run/sesame/trust/ca-bundle.pem"
JAVA_TRUST = (
    "-Djavax.net.ssl.trustStore=/var/run/sesame/trust/truststore.p12 "
    "-Djavax.net.ssl.trustStoreType=PKCS12 -Djavax.net.ssl.trustStorePassword=changeit"
)
APP = {"name": "app", "image": "example/app:1"}


def run(doc, settings=SETTINGS, *, ns_opted_in=False):
    response, outcome = review(doc, settings, namespace_opted_in=ns_opted_in)
    return response, outcome


def test_deployment_pod_gets_init_container_native_sidecar_volumes_and_trust_env():
    doc = deployment_review()
    response, outcome = run(doc)
    assert outcome.action == "injected"
    assert (outcome.namespace, outcome.pod) == ("payments", "billing-7c9f8d6b5-")
    result = patched(doc, response)
    spec = result["spec"]

    assert [c["name"] for c in spec["initContainers"]] == ["sesame-init", "sesame-proxy", "migrate"]
    init, proxy = spec["initContainers"][:2]
    assert init["command"] == ["sesame-proxy"] and init["args"][0] == "init"
    assert "--mode=transparent" in init["args"]
    assert init["securityContext"]["runAsUser"] == 0
    assert set(init["securityContext"]["capabilities"]["add"]) >= {"NET_ADMIN", "NET_RAW"}
    assert proxy["restartPolicy"] == "Always"
    assert proxy["startupProbe"]["httpGet"] == {"path": "/readyz", "port": 16020}
    sc = proxy["securityContext"]
    assert (sc["runAsUser"], sc["runAsNonRoot"], sc["readOnlyRootFilesystem"]) == (16001, True, True)
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert env_of(proxy)["SESAME_TOKEN_FILE"] == "/var/run/secrets/sesame/token"
    assert env_of(proxy)["SESAME_CONTROL_PLANE"] == "https://sesame.sesame-system.svc:443"
    assert [c["name"] for c in spec["containers"]] == ["billing", "log-shipper"]

    vols = {v["name"]: v for v in spec["volumes"]}
    assert {"config", "kube-api-access-x7k2p", "sesame-token", "sesame-ca", "sesame-trust"} <= set(vols)
    token = vols["sesame-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert token == {"audience": "sesame", "expirationSeconds": 3600, "path": "token"}
    assert vols["sesame-ca"]["emptyDir"]["medium"] == "Memory"
    ca_users = [
        c["name"]
        for c in [*spec["initContainers"], *spec["containers"]]
        if any(m["name"] == "sesame-ca" for m in c.get("volumeMounts", []))
    ]
    assert ca_users == ["sesame-init", "sesame-proxy"]

    for name in ("billing", "log-shipper", "migrate"):
        app = container(result, name)
        env = env_of(app)
        for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"):
            assert env[var] == BUNDLE
        trust = [m for m in app["volumeMounts"] if m["name"] == "sesame-trust"]
        assert trust == [{"name": "sesame-trust", "mountPath": "/var/run/sesame/trust", "readOnly": True}]
        assert "HTTP_PROXY" not in env
    billing = env_of(container(result, "billing"))
    assert billing["JAVA_TOOL_OPTIONS"] == f"-XX:MaxRAMPercentage=75 {JAVA_TRUST}"
    assert billing["LOG_LEVEL"] == "info"
    assert env_of(container(result, "migrate"))["DATABASE_URL"] == {
        "secretKeyRef": {"name": "billing-db", "key": "url"}
    }
    assert result["metadata"]["annotations"]["sesame.dev/status"] == "injected"
    assert result["metadata"]["annotations"]["prometheus.io/scrape"] == "true"


def test_injected_pod_is_left_alone_on_a_second_pass():
    doc = deployment_review()
    response, _ = run(doc)
    again = review_of(patched(doc, response), namespace="payments")
    response, outcome = run(again)
    assert outcome.action == "skipped" and outcome.reason == "already_injected"
    assert response["response"] == {"uid": again["request"]["uid"], "allowed": True}


def test_pod_without_lists_or_annotations_gets_whole_lists_added():
    doc = review_of(pod(APP), namespace="team-a")
    response, _ = run(doc, ns_opted_in=True)
    ops = json.loads(base64.b64decode(response["response"]["patch"]))
    paths = [op["path"] for op in ops]
    assert "/spec/initContainers" in paths and "/spec/volumes" in paths
    assert "/metadata/annotations" in paths
    assert "/spec/containers/0/env" in paths and "/spec/containers/0/volumeMounts" in paths
    result = patched(doc, response)
    assert [c["name"] for c in result["spec"]["initContainers"]] == ["sesame-init", "sesame-proxy"]
    assert result["metadata"]["annotations"] == {"sesame.dev/status": "injected"}


def test_status_annotation_key_is_escaped_in_the_patch_path():
    doc = review_of(pod(APP, annotations={"sesame.dev/inject": "true"}))
    response, _ = run(doc)
    ops = json.loads(base64.b64decode(response["response"]["patch"]))
    assert {"op": "add", "path": "/metadata/annotations/sesame.dev~1status", "value": "injected"} in ops
    assert escape_pointer("a~b/c") == "a~0b~1c"


@pytest.mark.parametrize(
    ("annotations", "ns_opted_in", "reason"),
    [
        ({"sesame.dev/inject": "false"}, True, "opted_out"),
        ({}, False, "not_opted_in"),
        (None, False, "not_opted_in"),
        ({"sesame.dev/status": "injected", "sesame.dev/inject": "true"}, True, "already_injected"),
    ],
)
def test_pods_that_did_not_ask_are_admitted_unchanged(annotations, ns_opted_in, reason):
    doc = review_of(pod(APP, annotations=annotations))
    response, outcome = run(doc, ns_opted_in=ns_opted_in)
    assert (outcome.action, outcome.reason) == ("skipped", reason)
    assert response["response"]["allowed"] is True
    assert "patch" not in response["response"]


def test_explicit_mode_sets_proxy_env_and_needs_no_net_admin():
    doc = review_of(pod(APP, annotations={"sesame.dev/inject": "true", "sesame.dev/mode": "explicit"}))
    result = patched(doc, run(doc)[0])
    env = env_of(container(result, "app"))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        assert env[name] == "http://127.0.0.1:16001"
    no_proxy = "localhost,127.0.0.1,::1,kubernetes.default.svc,.svc,.cluster.local"  # + the cluster's names
    assert env["NO_PROXY"] == env["no_proxy"] == no_proxy
    assert env["SSL_CERT_FILE"] == BUNDLE
    init = container(result, "sesame-init")
    assert "--mode=explicit" in init["args"]
    assert init["securityContext"]["runAsUser"] == 16001
    assert "add" not in init["securityContext"]["capabilities"]
    assert env_of(container(result, "sesame-proxy"))["SESAME_MODE"] == "explicit"


def test_skip_containers_and_containers_choose_who_gets_the_env():
    two = [APP, {"name": "sidecar", "image": "example/side:1"}, {"name": "db", "image": "example/db:1"}]
    doc = review_of(pod(*two, annotations={"sesame.dev/inject": "true", "sesame.dev/skip-containers": "db"}))
    result = patched(doc, run(doc)[0])
    assert "SSL_CERT_FILE" in env_of(container(result, "app"))
    assert "SSL_CERT_FILE" in env_of(container(result, "sidecar"))
    assert "env" not in container(result, "db") and "volumeMounts" not in container(result, "db")

    doc = review_of(pod(*two, annotations={"sesame.dev/inject": "true", "sesame.dev/containers": "sidecar"}))
    result = patched(doc, run(doc)[0])
    assert [n for n in ("app", "sidecar", "db") if "env" in container(result, n)] == ["sidecar"]


def test_native_sidecar_false_appends_a_classic_sidecar():
    doc = review_of(pod(APP, annotations={"sesame.dev/inject": "true", "sesame.dev/native-sidecar": "false"}))
    result = patched(doc, run(doc)[0])
    assert [c["name"] for c in result["spec"]["initContainers"]] == ["sesame-init"]
    assert [c["name"] for c in result["spec"]["containers"]] == ["app", "sesame-proxy"]
    assert "restartPolicy" not in container(result, "sesame-proxy")


def test_resources_come_from_annotations_then_settings():
    settings = InjectorSettings(resources=Resources(cpu="20m", memory="32Mi", cpu_limit="1", memory_limit=""))
    doc = review_of(
        pod(
            APP,
            annotations={
                "sesame.dev/inject": "true",
                "sesame.dev/proxy-memory": "96Mi",
                "sesame.dev/proxy-memory-limit": "192Mi",
            },
        )
    )
    result = patched(doc, run(doc, settings)[0])
    assert container(result, "sesame-proxy")["resources"] == {
        "requests": {"cpu": "20m", "memory": "96Mi"},
        "limits": {"cpu": "1", "memory": "192Mi"},
    }


def test_exclusions_from_settings_and_annotations_reach_the_init_container():
    settings = InjectorSettings(exclude_cidrs=("10.96.0.0/12",), exclude_ports=(5432,))
    doc = review_of(
        pod(
            APP,
            annotations={
                "sesame.dev/inject": "true",
                "sesame.dev/exclude-cidrs": "10.1.2.3/32",
                "sesame.dev/exclude-ports": "6379",
            },
        )
    )
    args = container(patched(doc, run(doc, settings)[0]), "sesame-init")["args"]
    assert "--exclude-cidrs=10.96.0.0/12,10.1.2.3/32" in args
    assert "--exclude-ports=5432,6379" in args


def test_dual_stack_setting_makes_the_init_container_redirect_ipv6():
    doc = review_of(pod(APP, annotations={"sesame.dev/inject": "true"}))
    assert "--ipv6=true" not in container(patched(doc, run(doc)[0]), "sesame-init")["args"]
    settings = InjectorSettings.build({"SESAME_INJECTOR_IPV6": "true"})
    assert "--ipv6=true" in container(patched(doc, run(doc, settings)[0]), "sesame-init")["args"]


def test_user_set_trust_variable_is_kept_with_a_warning():
    app = {**APP, "env": [{"name": "SSL_CERT_FILE", "value": "/etc/custom.pem"}]}
    doc = review_of(pod(app, annotations={"sesame.dev/inject": "true"}))
    response, outcome = run(doc)
    assert env_of(container(patched(doc, response), "app"))["SSL_CERT_FILE"] == "/etc/custom.pem"
    assert response["response"]["warnings"] == outcome.warnings
    assert "SSL_CERT_FILE" in outcome.warnings[0]


def test_java_tool_options_already_carrying_the_trust_store_is_not_doubled():
    app = {**APP, "env": [{"name": "JAVA_TOOL_OPTIONS", "value": f"-Xmx1g {JAVA_TRUST}"}]}
    doc = review_of(pod(app, annotations={"sesame.dev/inject": "true"}))
    assert env_of(container(patched(doc, run(doc)[0]), "app"))["JAVA_TOOL_OPTIONS"] == f"-Xmx1g {JAVA_TRUST}"


BROKEN = [
    ({"containers": [{"name": "sesame-proxy", "image": "x"}]}, {}, "container name 'sesame-proxy'"),
    ({"volumes": [{"name": "sesame-ca", "emptyDir": {}}]}, {}, "volume name 'sesame-ca'"),
    ({}, {"sesame.dev/proxy-cpu": "lots"}, "sesame.dev/proxy-cpu is not a resource quantity"),
    ({}, {"sesame.dev/mode": "magic"}, "sesame.dev/mode"),
    ({}, {"sesame.dev/native-sidecar": "maybe"}, "sesame.dev/native-sidecar"),
    ({}, {"sesame.dev/skip-containers": "nope"}, "unknown containers: nope"),
    ({}, {"sesame.dev/exclude-ports": "http"}, "sesame.dev/exclude-ports"),
    ({"hostNetwork": True}, {}, "hostNetwork"),
    (
        {
            "containers": [
                {
                    "name": "app",
                    "image": "x",
                    "env": [
                        {
                            "name": "JAVA_TOOL_OPTIONS",
                            "valueFrom": {"configMapKeyRef": {"name": "j", "key": "o"}},
                        }
                    ],
                }
            ]
        },
        {},
        "JAVA_TOOL_OPTIONS from valueFrom",
    ),
]


@pytest.mark.parametrize(("spec", "extra", "message"), BROKEN)
def test_pod_that_cannot_be_injected_is_denied_in_strict_mode(spec, extra, message):
    obj = pod(APP, annotations={"sesame.dev/inject": "true", **extra})
    obj["spec"].update(spec)
    response, outcome = run(review_of(obj))
    assert outcome.action == "denied"
    answer = response["response"]
    assert answer["allowed"] is False and "patch" not in answer
    assert answer["status"]["code"] == 403
    assert message in answer["status"]["message"]
    assert "apps/web" in answer["status"]["message"]


def test_pod_that_cannot_be_injected_is_admitted_with_a_warning_when_not_strict():
    settings = InjectorSettings(strict=False)
    obj = pod({"name": "sesame-init", "image": "x"}, annotations={"sesame.dev/inject": "true"})
    response, outcome = run(review_of(obj), settings)
    assert (outcome.action, outcome.reason) == ("skipped", "injection_failed")
    assert response["response"]["allowed"] is True and "patch" not in response["response"]
    assert "WITHOUT the sesame proxy" in response["response"]["warnings"][0]


def test_namespace_opt_in_with_a_bad_inject_value_is_a_problem_not_a_skip():
    response, outcome = run(review_of(pod(APP, annotations={"sesame.dev/inject": "yes"})), ns_opted_in=True)
    assert outcome.action == "denied"
    assert 'must be "true" or "false"' in response["response"]["status"]["message"]


@pytest.mark.parametrize(
    "doc",
    [
        [],
        {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "x"}},
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"},
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"operation": "CREATE"}},
    ],
)
def test_malformed_review_is_invalid_request(doc):
    with pytest.raises(InvalidRequest) as info:
        run(doc)
    assert info.value.status == 400


def test_pod_create_without_spec_is_invalid_request():
    doc = review_of(pod(APP))
    doc["request"]["object"] = {"kind": "Pod"}
    with pytest.raises(InvalidRequest, match=r"request\.object"):
        run(doc)


def test_other_operations_and_kinds_pass_through():
    doc = review_of(pod(APP, annotations={"sesame.dev/inject": "true"}), operation="UPDATE")
    response, outcome = run(doc)
    assert outcome.reason == "not_a_pod_create" and response["response"]["allowed"] is True


def test_settings_build_from_env_and_reject_bad_values():
    settings = InjectorSettings.build(
        {
            "SESAME_INJECTOR_PROXY_IMAGE": "r/p:2",
            "SESAME_INJECTOR_MODE": "explicit",
            "SESAME_INJECTOR_STRICT": "false",
            "SESAME_INJECTOR_NATIVE_SIDECAR": "false",
            "SESAME_AUDIENCE": "sesame-prod",
            "SESAME_INJECTOR_PROXY_CPU": "100m",
            "SESAME_INJECTOR_EXCLUDE_CIDRS": "10.0.0.0/8, 192.168.1.1/32",
            "SESAME_INJECTOR_EXCLUDE_PORTS": "5432",
            "SESAME_INJECTOR_CONTROL_PLANE_URL": "https://cp.sesame.svc:8443",
        }
    )
    assert (settings.proxy_image, settings.mode, settings.strict, settings.native_sidecar) == (
        "r/p:2",
        "explicit",
        False,
        False,
    )
    assert settings.audience == "sesame-prod" and settings.resources.cpu == "100m"
    assert settings.exclude_cidrs == ("10.0.0.0/8", "192.168.1.1/32") and settings.exclude_ports == (5432,)
    assert InjectorSettings.build({}) == InjectorSettings()
    for env in (
        {"SESAME_INJECTOR_MODE": "sideways"},
        {"SESAME_INJECTOR_STRICT": "perhaps"},
        {"SESAME_INJECTOR_PROXY_MEMORY": "lots"},
        {"SESAME_INJECTOR_EXCLUDE_PORTS": "x"},
        {"SESAME_INJECTOR_CONTROL_PLANE_URL": "sesame:443"},
    ):
        with pytest.raises(StartupError):
            InjectorSettings.build(env)
