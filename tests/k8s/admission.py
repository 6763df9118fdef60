"""AdmissionReview documents as kube-apiserver sends them, and checks on the patched pods."""

from __future__ import annotations

import base64
import copy
import json
import uuid
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate
from kubernetes.client import V1Pod

TESTDATA = Path(__file__).with_name("testdata")
K8S_VERSION = "1.32"


def deployment_review() -> dict[str, Any]:
    """A recorded-shape review of a ReplicaSet-created pod (init container, two containers, env)."""
    return json.loads((TESTDATA / "admission-review-deployment-pod.json").read_text())


def review_of(pod: dict[str, Any], *, namespace: str = "apps", operation: str = "CREATE") -> dict[str, Any]:
    """Wrap ``pod`` the way the apiserver does for a pods CREATE."""
    pod = copy.deepcopy(pod)
    pod.setdefault("apiVersion", "v1")
    pod.setdefault("kind", "Pod")
    gvk = {"group": "", "version": "v1", "kind": "Pod"}
    gvr = {"group": "", "version": "v1", "resource": "pods"}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": pod.get("metadata", {}).get("name", ""),
            "namespace": namespace,
            "operation": operation,
            "userInfo": {
                "username": "kubernetes-admin",
                "groups": ["system:masters", "system:authenticated"],
            },
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }


def pod(
    *containers: dict[str, Any], annotations: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "web", "namespace": "apps"}
    if annotations is not None:
        meta["annotations"] = annotations
    body = {"containers": list(containers) or [{"name": "app", "image": "example/app:1"}], **spec}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": body}


def patched(review: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """Apply the response's JSONPatch to the reviewed pod and validate the result strictly."""
    answer = response["response"]
    assert answer["uid"] == review["request"]["uid"]
    assert answer["allowed"] is True
    assert answer["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(answer["patch"]))
    result = jsonpatch.apply_patch(review["request"]["object"], ops)
    validate_pod(result)
    return result


def validate_pod(obj: dict[str, Any]) -> None:
    V1Pod.model_validate(obj)
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def container(pod_obj: dict[str, Any], name: str) -> dict[str, Any]:
    for item in [*pod_obj["spec"].get("initContainers", []), *pod_obj["spec"]["containers"]]:
        if item["name"] == name:
            return item
    raise AssertionError(f"no container {name!r}")


def env_of(item: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in item.get("env", [])}
