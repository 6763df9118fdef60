"""Ten realistic pods as the apiserver hands them to the webhook (what a platform team deploys).

Each is the pod a controller would create (ReplicaSet, Job, or a bare pod) with the fields the
apiserver has defaulted by the time mutating webhooks run. The tests apply the webhook's patch with
``jsonpatch`` and validate the result strictly (see ``admission.patched``).
"""

from __future__ import annotations

import copy
from typing import Any

RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _meta(name: str, owner: str | None = None, **annotations: str) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "generateName": f"{name}-",
        "namespace": "apps",
        "labels": {"app": name},
        "annotations": {"sesame.dev/inject": "true", **annotations},
    }
    if owner:
        meta["ownerReferences"] = [
            {
                "apiVersion": "batch/v1" if owner == "Job" else "apps/v1",
                "kind": owner,
                "name": name,
                "uid": "5b1c7e1e-7d51-4a5e-8c2b-1f0e3c9d8a71",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return meta


def _c(name: str, image: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "resources": {},
        **extra,
    }


def _pod(meta: dict[str, Any], *containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    body = {
        "containers": list(containers),
        "restartPolicy": "Always",
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default",
        "terminationGracePeriodSeconds": 30,
        **spec,
    }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": body}


def _istio_pod() -> dict[str, Any]:
    """As Istio 1.2x's injector leaves it (native sidecar mode): istio-init, then istio-proxy."""
    istio_proxy = _c(
        "istio-proxy",
        "docker.io/istio/proxyv2:1.24.0",
        args=["proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local"],
        ports=[{"name": "http-envoy-prom", "containerPort": 15090, "protocol": "TCP"}],
        restartPolicy="Always",
        securityContext={"runAsUser": 1337, "runAsGroup": 1337, "runAsNonRoot": True},
    )
    istio_init = _c(
        "istio-init",
        "docker.io/istio/proxyv2:1.24.0",
        args=["istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*"],
        securityContext={
            "runAsUser": 0,
            "runAsNonRoot": False,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        },
    )
    meta = _meta("reviews", "ReplicaSet", **{"sidecar.istio.io/status": '{"initContainers":["istio-init"]}'})
    return _pod(
        meta,
        _c("reviews", "docker.io/istio/examples-bookinfo-reviews-v1:1.20.1"),
        initContainers=[istio_init, istio_proxy],
    )


CORPUS: dict[str, dict[str, Any]] = {
    "deployment-with-init": _pod(
        _meta("billing", "ReplicaSet"),
        _c("billing", "registry.example.com/billing:2.4.1", env=[{"name": "LOG_LEVEL", "value": "info"}]),
        initContainers=[_c("migrate", "registry.example.com/billing:2.4.1", command=["billing", "migrate"])],
    ),
    "job": _pod(
        _meta("report", "Job"),
        _c("report", "registry.example.com/report:1.0", command=["report", "--daily"]),
        restartPolicy="Never",
    ),
    "job-classic-sidecar": _pod(
        _meta("export", "Job", **{"sesame.dev/native-sidecar": "false"}),
        _c("export", "registry.example.com/export:1.0"),
        restartPolicy="OnFailure",
    ),
    "own-http-proxy": _pod(
        _meta("crawler", "ReplicaSet", **{"sesame.dev/mode": "explicit"}),
        _c(
            "crawler",
            "registry.example.com/crawler:3.1",
            env=[
                {"name": "HTTP_PROXY", "value": "http://proxy.corp.internal:3128"},
                {"name": "HTTPS_PROXY", "value": "http://proxy.corp.internal:3128"},
                {"name": "NO_PROXY", "value": ".corp.internal"},
            ],
        ),
    ),
    "java": _pod(
        _meta("ledger", "ReplicaSet"),
        _c(
            "ledger",
            "eclipse-temurin:21-jre",
            env=[{"name": "JAVA_TOOL_OPTIONS", "value": "-XX:MaxRAMPercentage=75"}],
        ),
    ),
    "java-value-from": _pod(
        _meta("invoicing", "ReplicaSet"),
        _c(
            "invoicing",
            "eclipse-temurin:21-jre",
            env=[
                {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                {"name": "JAVA_OPTS", "valueFrom": {"configMapKeyRef": {"name": "jvm", "key": "opts"}}},
            ],
        ),
    ),
    "node": _pod(
        _meta("storefront", "ReplicaSet", **{"sesame.dev/mode": "explicit"}),
        _c("storefront", "node:22-slim", command=["node", "server.js"]),
    ),
    "multi-container": _pod(
        _meta("search", "ReplicaSet", **{"sesame.dev/skip-containers": "redis"}),
        _c("search", "registry.example.com/search:5.0"),
        _c("indexer", "registry.example.com/indexer:5.0"),
        _c("redis", "redis:7"),
    ),
    "psa-restricted": _pod(
        _meta("audit-sink", "ReplicaSet", **{"sesame.dev/mode": "explicit"}),
        _c("audit-sink", "registry.example.com/audit-sink:1.2", securityContext=copy.deepcopy(RESTRICTED)),
        securityContext={"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    ),
    "istio-injected": _istio_pod(),
}


def corpus_pod(name: str) -> dict[str, Any]:
    return copy.deepcopy(CORPUS[name])


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """Pod Security Standards "restricted" (v1.29) checks on every container; [] when it complies."""
    spec = pod["spec"]
    pod_sc = spec.get("securityContext") or {}
    found = []
    for item in [*spec.get("initContainers", []), *spec["containers"]]:
        sc = item.get("securityContext") or {}
        name = item["name"]
        if sc.get("privileged"):
            found.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation not false")
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            found.append(f"{name}: runAsNonRoot not true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            found.append(f"{name}: runAsUser 0")
        if "ALL" not in (sc.get("capabilities") or {}).get("drop", []):
            found.append(f"{name}: capabilities not dropped")
        if set((sc.get("capabilities") or {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: adds capabilities")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: no seccomp profile")
    allowed = {"configMap", "emptyDir", "projected", "secret", "downwardAPI", "persistentVolumeClaim"}
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= allowed:
            found.append(f"volume {volume['name']}: {kinds}")
    return found
