"""The ten-pod corpus through the webhook: every mutated pod validates strictly (1.29-1.33), Jobs
never get a sidecar that keeps them running, meshes keep their ports and go first, bad annotations
are refused."""

from __future__ import annotations

import kubernetes_validate
import pytest

from controlplane.errors import StartupError
from controlplane.injector import review
from controlplane.injector_mesh import MESHES
from controlplane.injector_spec import InjectorSettings

from .admission import container, patched, review_of
from .corpus import CORPUS, corpus_pod, restricted_violations

SETTINGS = InjectorSettings(control_plane_url="https://sesame.sesame-system.svc:443")
DENIED = {"job-classic-sidecar"}
VALIDATED_VERSIONS = ("1.29", "1.30", "1.31", "1.32", "1.33")


def answer(pod, settings=SETTINGS):
    doc = review_of(pod, namespace="apps")
    response, outcome = review(doc, settings, namespace_opted_in=False)
    return doc, response, outcome


@pytest.mark.parametrize("name", sorted(set(CORPUS) - DENIED))
def test_corpus_pod_is_injected_and_validates_strictly(name):
    doc, response, outcome = answer(corpus_pod(name))
    assert outcome.action == "injected", outcome.message
    result = patched(doc, response)  # jsonpatch + kubernetes_validate strict 1.32 + V1Pod
    for version in VALIDATED_VERSIONS:
        kubernetes_validate.validate(result, version, strict=True)
    names = [c["name"] for c in result["spec"]["initContainers"]]
    assert "sesame-init" in names and "sesame-proxy" in names
    again = review_of(result, namespace="apps")
    assert review(again, SETTINGS, namespace_opted_in=True)[1].reason == "already_injected"


def test_job_gets_a_native_sidecar_and_no_warning():
    doc, response, outcome = answer(corpus_pod("job"))
    result = patched(doc, response)
    assert container(result, "sesame-proxy")["restartPolicy"] == "Always"
    assert [c["name"] for c in result["spec"]["containers"]] == ["report"]
    assert not outcome.warnings


def test_job_that_would_get_a_classic_sidecar_is_denied_when_strict():
    _, response, outcome = answer(corpus_pod("job-classic-sidecar"))
    assert (outcome.action, outcome.reason) == ("denied", "injection_failed")
    message = response["response"]["status"]["message"]
    assert "never completes" in message and 'sesame.dev/native-sidecar: "true"' in message


def test_job_with_classic_sidecar_is_injected_with_a_warning_when_not_strict():
    settings = InjectorSettings(strict=False, native_sidecar=False)
    doc, response, outcome = answer(corpus_pod("job"), settings)
    assert outcome.action == "injected"
    assert any("never completes" in w for w in response["response"]["warnings"])
    patched(doc, response)
    # A Deployment's pod with the same setting gets no such warning.
    _, _, deployment = answer(corpus_pod("deployment-with-init"), settings)
    assert not [w for w in deployment.warnings if "never completes" in w]


def test_istio_pod_keeps_istio_first_and_is_warned_about_the_ordering_rule():
    doc, response, outcome = answer(corpus_pod("istio-injected"))
    result = patched(doc, response)
    names = [c["name"] for c in result["spec"]["initContainers"]]
    assert names == ["istio-init", "istio-proxy", "sesame-init", "sesame-proxy"]
    [warning] = [w for w in outcome.warnings if "Istio" in w]
    assert "the app's traffic goes to sesame, sesame's upstream traffic through Istio" in warning
    proxy = container(result, "sesame-proxy")
    assert proxy["securityContext"]["runAsUser"] not in (1337, 2102)
    assert "--exclude-uids=1337,2102" in container(result, "sesame-init")["args"]


def test_a_detected_mesh_uid_is_excluded_even_when_the_default_list_is_emptied():
    settings = InjectorSettings.build({"SESAME_INJECTOR_EXCLUDE_UIDS": ""})
    assert settings.exclude_uids == ()
    doc, response, _ = answer(corpus_pod("istio-injected"), settings)
    assert "--exclude-uids=1337" in container(patched(doc, response), "sesame-init")["args"]
    doc, response, _ = answer(corpus_pod("job"), settings)
    assert not [a for a in container(patched(doc, response), "sesame-init")["args"] if "uids" in a]


def test_default_ports_and_uid_are_clear_of_istio_and_linkerd():
    settings = InjectorSettings()
    for mesh in MESHES:
        assert {settings.proxy_port, settings.admin_port}.isdisjoint(mesh.ports), mesh.name
        assert settings.proxy_uid != mesh.uid, mesh.name


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (InjectorSettings(proxy_port=15001), "sesame's port 15001 is also Istio's"),
        (InjectorSettings(admin_port=15020), "sesame's port 15020 is also Istio's"),
        (InjectorSettings(proxy_uid=1337, exclude_uids=()), "sesame's proxy UID 1337 is also Istio's"),
    ],
)
def test_settings_that_collide_with_the_pods_mesh_are_refused(settings, message):
    _, response, outcome = answer(corpus_pod("istio-injected"), settings)
    assert outcome.action == "denied"
    assert message in response["response"]["status"]["message"]


def test_linkerd_annotation_is_detected_before_its_injector_ran():
    pod = corpus_pod("deployment-with-init")
    pod["metadata"]["annotations"]["linkerd.io/inject"] = "enabled"
    _, _, outcome = answer(pod)
    assert any("pod carries Linkerd" in w for w in outcome.warnings)
    pod["metadata"]["annotations"]["linkerd.io/inject"] = "disabled"
    assert not any("Linkerd" in w for w in answer(pod)[2].warnings)


def test_ports_and_uid_are_settings():
    settings = InjectorSettings.build(
        {
            "SESAME_INJECTOR_PROXY_PORT": "17001",
            "SESAME_INJECTOR_ADMIN_PORT": "17020",
            "SESAME_INJECTOR_PROXY_UID": "4242",
        }
    )
    doc, response, _ = answer(corpus_pod("node"), settings)
    result = patched(doc, response)
    proxy, init = container(result, "sesame-proxy"), container(result, "sesame-init")
    env = {e["name"]: e.get("value") for e in proxy["env"]}
    assert env["SESAME_LISTEN"] == "127.0.0.1:17001" and env["SESAME_ADMIN"] == "0.0.0.0:17020"
    assert proxy["startupProbe"]["httpGet"]["port"] == 17020
    assert proxy["securityContext"]["runAsUser"] == 4242
    assert {"--proxy-port=17001", "--proxy-uid=4242", "--exclude-uids=1337,2102"} <= set(init["args"])
    app_env = {e["name"]: e.get("value") for e in container(result, "storefront")["env"]}
    assert app_env["HTTPS_PROXY"] == "http://127.0.0.1:17001"


def test_psa_restricted_pod_stays_restricted_in_explicit_mode():
    pod = corpus_pod("psa-restricted")
    assert restricted_violations(pod) == []
    doc, response, outcome = answer(pod)
    assert restricted_violations(patched(doc, response)) == []
    assert not [w for w in outcome.warnings if "restricted" in w]


def test_psa_restricted_pod_in_transparent_mode_is_warned():
    pod = corpus_pod("psa-restricted")
    del pod["metadata"]["annotations"]["sesame.dev/mode"]
    doc, response, outcome = answer(pod)
    violations = restricted_violations(patched(doc, response))
    assert violations and all(v.startswith("sesame-init") for v in violations)
    assert any('Pod Security "restricted"' in w for w in outcome.warnings)


@pytest.mark.parametrize("value", ["10.0.0.0/33", "10.0.0.0/8,not-a-cidr", "fd00::/129", "300.1.1.1"])
def test_invalid_exclude_cidrs_annotation_is_refused(value):
    pod = corpus_pod("deployment-with-init")
    pod["metadata"]["annotations"]["sesame.dev/exclude-cidrs"] = value
    _, response, outcome = answer(pod)
    assert outcome.action == "denied"
    assert "sesame.dev/exclude-cidrs must list CIDRs" in response["response"]["status"]["message"]


def test_valid_exclude_cidrs_annotation_reaches_the_init_container():
    pod = corpus_pod("deployment-with-init")
    pod["metadata"]["annotations"]["sesame.dev/exclude-cidrs"] = "10.0.0.0/8, fd00::/8,192.0.2.7"
    doc, response, _ = answer(pod)
    args = container(patched(doc, response), "sesame-init")["args"]
    assert "--exclude-cidrs=10.0.0.0/8,fd00::/8,192.0.2.7" in args


@pytest.mark.parametrize(
    "env",
    [
        {"SESAME_INJECTOR_EXCLUDE_CIDRS": "10.0.0.0/33"},
        {"SESAME_INJECTOR_PROXY_PORT": "70000"},
        {"SESAME_INJECTOR_PROXY_PORT": "16020"},
        {"SESAME_INJECTOR_PROXY_UID": "0"},
        {"SESAME_INJECTOR_PROXY_UID": "root"},
        {"SESAME_INJECTOR_PROXY_UID": "1337"},
        {"SESAME_INJECTOR_EXCLUDE_UIDS": "0"},
    ],
)
def test_bad_injector_settings_stop_the_control_plane(env):
    with pytest.raises(StartupError):
        InjectorSettings.build(env)
