"""The admission webhook's logic: AdmissionReview (admission.k8s.io/v1) in → response with a JSONPatch out.

Pure: no I/O. The route (`controlplane.api.admission`) parses the body, calls :func:`review` and
audits the returned :class:`Outcome`. A pod that asked for injection but cannot be mutated
correctly is never skipped silently: denied when ``strict``, otherwise allowed with warnings.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from controlplane.errors import InvalidRequest
from controlplane.injector_mesh import Mesh, detect_meshes, mesh_init_end
from controlplane.injector_runtimes import (
    JAVA_PROXY_PROPERTIES,
    PROXY_VARIABLES,
    explicit_env,
    java_options,
    trust_env,
)
from controlplane.injector_spec import (
    ANNOTATION_PREFIX,
    INIT_NAME,
    PROXY_NAME,
    TRUST_DIR,
    TRUST_MOUNT,
    VOLUME_NAMES,
    InjectorSettings,
    Resources,
    aws_placeholder_env,
    init_container,
    invalid_cidrs,
    proxy_container,
    valid_quantity,
    volumes,
)

__all__ = [
    "ANNOTATIONS",
    "InjectionProblem",
    "InjectorSettings",
    "Outcome",
    "build_patch",
    "escape_pointer",
    "review",
]

A_INJECT = ANNOTATION_PREFIX + "inject"
A_STATUS = ANNOTATION_PREFIX + "status"
A_MODE = ANNOTATION_PREFIX + "mode"
A_NATIVE = ANNOTATION_PREFIX + "native-sidecar"
A_CONTAINERS = ANNOTATION_PREFIX + "containers"
A_SKIP = ANNOTATION_PREFIX + "skip-containers"
A_EXCLUDE_CIDRS = ANNOTATION_PREFIX + "exclude-cidrs"
A_EXCLUDE_PORTS = ANNOTATION_PREFIX + "exclude-ports"
A_RESOURCES = {
    "cpu": ANNOTATION_PREFIX + "proxy-cpu",
    "memory": ANNOTATION_PREFIX + "proxy-memory",
    "cpu_limit": ANNOTATION_PREFIX + "proxy-cpu-limit",
    "memory_limit": ANNOTATION_PREFIX + "proxy-memory-limit",
}
ANNOTATIONS = (
    A_INJECT,
    A_STATUS,
    A_MODE,
    A_NATIVE,
    A_CONTAINERS,
    A_SKIP,
    A_EXCLUDE_CIDRS,
    A_EXCLUDE_PORTS,
    *A_RESOURCES.values(),
)
INJECTED = "injected"
API_VERSION = "admission.k8s.io/v1"
JAVA_TOOL_OPTIONS = "JAVA_TOOL_OPTIONS"


class InjectionProblem(Exception):
    """The pod asked for injection but cannot be mutated correctly."""


@dataclass(frozen=True)
class Outcome:
    """What the webhook did: ``injected``, ``skipped`` or ``denied``, with a stable reason code."""

    action: Literal["injected", "skipped", "denied"]
    reason: str
    patch: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    namespace: str = ""
    pod: str = ""
    message: str = ""  # why, in words (the denial's status message)


def escape_pointer(token: str) -> str:
    """RFC 6901: ``~`` → ``~0``, ``/`` → ``~1`` (annotation keys contain ``/``)."""
    return token.replace("~", "~0").replace("/", "~1")


def review(document: Any, settings: InjectorSettings, *, namespace_opted_in: bool) -> tuple[dict, Outcome]:
    """Answer one AdmissionReview; raises ``InvalidRequest`` (400) when it is malformed."""
    request = _request_of(document)
    uid = request["uid"]
    pod = request.get("object")
    kind = _object(request, "kind", "request.kind")
    namespace = str(request.get("namespace") or "")
    if request.get("operation") != "CREATE" or kind.get("kind") != "Pod" or kind.get("group", "") != "":
        outcome = Outcome("skipped", "not_a_pod_create", namespace=namespace)
        return _response(uid, outcome), outcome
    if not isinstance(pod, dict) or not isinstance(pod.get("spec"), dict):
        raise InvalidRequest("request.object must be a Pod with a spec", field="request.object")
    _check_pod(pod)
    meta = pod.get("metadata") or {}
    name = str(meta.get("name") or meta.get("generateName") or "")
    annotations = meta.get("annotations") or {}
    namespace = namespace or str(meta.get("namespace") or "")

    wanted = annotations.get(A_INJECT)
    if annotations.get(A_STATUS) == INJECTED:
        outcome = Outcome("skipped", "already_injected", namespace=namespace, pod=name)
    elif wanted == "false":
        outcome = Outcome("skipped", "opted_out", namespace=namespace, pod=name)
    elif wanted is None and not namespace_opted_in:
        outcome = Outcome("skipped", "not_opted_in", namespace=namespace, pod=name)
    else:
        try:
            if wanted not in (None, "true"):
                raise InjectionProblem(f'annotation {A_INJECT} must be "true" or "false", got {wanted!r}')
            patch, warnings = build_patch(pod, settings)
            outcome = Outcome("injected", "injected", patch, warnings, namespace, name)
        except InjectionProblem as exc:
            message = f"sesame injection failed for pod {namespace}/{name}: {exc}"
            if settings.strict:
                outcome = Outcome(
                    "denied", "injection_failed", namespace=namespace, pod=name, message=message
                )
            else:
                warning = f"{message}; the pod was admitted WITHOUT the sesame proxy"
                outcome = Outcome(
                    "skipped", "injection_failed", warnings=[warning], namespace=namespace, pod=name
                )
    return _response(uid, outcome), outcome


def _request_of(document: Any) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise InvalidRequest("body must be an AdmissionReview object")
    if document.get("apiVersion") != API_VERSION or document.get("kind") != "AdmissionReview":
        raise InvalidRequest(f"expected apiVersion {API_VERSION}, kind AdmissionReview", field="apiVersion")
    request = document.get("request")
    if not isinstance(request, dict):
        raise InvalidRequest("request is missing", field="request")
    if not isinstance(request.get("uid"), str) or not request["uid"]:
        raise InvalidRequest("request.uid is missing", field="request.uid")
    for key in ("namespace", "operation"):
        if not isinstance(request.get(key) or "", str):
            raise InvalidRequest(f"request.{key} must be a string", field=f"request.{key}")
    _object(request, "userInfo", "request.userInfo")
    return request


def _object(parent: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    """`parent[key]` as an object ({} when absent or null); 400 when it is something else."""
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest(f"{path} must be an object", field=path)
    return value


def _objects(parent: dict[str, Any], key: str, path: str, strings: tuple[str, ...]) -> None:
    """`parent[key]`, when set, is a list of objects whose `strings` fields are strings when set."""
    value = parent.get(key)
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise InvalidRequest(f"{path} must be a list of objects", field=path)
    for index, item in enumerate(value):
        for name in strings:
            if not isinstance(item.get(name) or "", str):
                field = f"{path}[{index}].{name}"
                raise InvalidRequest(f"{field} must be a string", field=field)


def _check_pod(pod: dict[str, Any]) -> None:
    """The Pod fields the patch reads have their Kubernetes types (the apiserver always sends them so;
    anything else is a malformed review and gets 400, never a crash)."""
    meta = _object(pod, "metadata", "request.object.metadata")
    for key in ("name", "generateName", "namespace"):
        if not isinstance(meta.get(key) or "", str):
            field = f"request.object.metadata.{key}"
            raise InvalidRequest(f"{field} must be a string", field=field)
    annotations = _object(meta, "annotations", "request.object.metadata.annotations")
    if not all(isinstance(v, str) for v in annotations.values()):
        path = "request.object.metadata.annotations"
        raise InvalidRequest(f"{path} must map strings to strings", field=path)
    spec = pod["spec"]
    _objects(spec, "volumes", "request.object.spec.volumes", ("name",))
    for key in ("containers", "initContainers"):
        path = f"request.object.spec.{key}"
        _objects(spec, key, path, ("name",))
        for index, container in enumerate(spec.get(key) or []):
            _objects(container, "env", f"{path}[{index}].env", ("name", "value"))
            _objects(container, "volumeMounts", f"{path}[{index}].volumeMounts", ("mountPath",))


def _response(uid: str, outcome: Outcome) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": outcome.action != "denied"}
    if outcome.action == "denied":
        response["status"] = {"code": 403, "reason": "Forbidden", "message": outcome.message}
    if outcome.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(outcome.patch).encode()).decode()
    if outcome.warnings:
        response["warnings"] = list(outcome.warnings)
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}


# ---------------------------------------------------------------------------------------------
# the patch


def build_patch(pod: dict[str, Any], settings: InjectorSettings) -> tuple[list[dict[str, Any]], list[str]]:
    """JSONPatch ops injecting the sidecar into ``pod`` plus warnings; raises InjectionProblem."""
    spec = pod["spec"]
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    containers = _list(spec, "containers")
    inits = _list(spec, "initContainers")
    warnings: list[str] = []

    if spec.get("hostNetwork"):
        raise InjectionProblem("hostNetwork pods share the node's network stack and cannot be injected")
    taken = {c.get("name") for c in (*containers, *inits)} & {INIT_NAME, PROXY_NAME}
    if taken:
        raise InjectionProblem(f"container name {sorted(taken)[0]!r} is already used by the pod")
    clash = {v.get("name") for v in _list(spec, "volumes")} & set(VOLUME_NAMES)
    if clash:
        raise InjectionProblem(f"volume name {sorted(clash)[0]!r} is already used by the pod")

    mode = annotations.get(A_MODE, settings.mode)
    if mode not in ("transparent", "explicit"):
        raise InjectionProblem(f'annotation {A_MODE} must be "transparent" or "explicit", got {mode!r}')
    native = _bool(annotations, A_NATIVE, settings.native_sidecar)
    if not native and _runs_to_completion(pod):
        problem = (
            "a Job's pod would get a classic sidecar, which never exits, so the Job never completes; "
            f'use a native sidecar ({A_NATIVE}: "true", Kubernetes >= 1.29)'
        )
        if settings.strict:
            raise InjectionProblem(problem)
        warnings.append(f"sesame: {problem}")
    if mode == "transparent" and (spec.get("securityContext") or {}).get("runAsNonRoot") is True:
        warnings.append(
            "sesame: the pod asks runAsNonRoot, but transparent mode's sesame-init runs as root with "
            'NET_ADMIN, which Pod Security "restricted" refuses; use sesame.dev/mode: explicit there'
        )
    meshes = detect_meshes(pod)
    warnings += [_mesh_check(mesh, settings) for mesh in meshes]
    resources = _resources(annotations, settings.resources)
    exclude_cidrs = settings.exclude_cidrs + _cidrs(annotations)
    exclude_ports = settings.exclude_ports + _ports(annotations)

    ops: list[dict[str, Any]] = []
    # 1. existing containers first, by their original index (the inserts below shift initContainers).
    selected = _selected(annotations, containers, inits)
    for path, items in (("/spec/containers", containers), ("/spec/initContainers", inits)):
        for index, container in enumerate(items):
            if container.get("name") in selected:
                env = _container_env(container, settings, mode == "explicit", warnings)
                ops += _container_ops(f"{path}/{index}", container, env, warnings)

    # 2. volumes, 3. the init container and the proxy, 4. the status annotation.
    ops += _append_ops(spec, "volumes", "/spec/volumes", volumes(settings))
    uids = tuple(dict.fromkeys((*settings.exclude_uids, *(m.uid for m in meshes))))  # a mesh's, always
    init = init_container(
        settings, mode=mode, exclude_cidrs=exclude_cidrs, exclude_ports=exclude_ports, exclude_uids=uids
    )
    proxy = proxy_container(settings, mode=mode, resources=resources, native=native)
    if not inits:
        value = [init, proxy] if native else [init]
        ops.append({"op": "add", "path": "/spec/initContainers", "value": value})
    else:
        at = mesh_init_end(inits, meshes)  # after a mesh's init containers, before the app's
        ops.append({"op": "add", "path": f"/spec/initContainers/{at}", "value": init})
        if native:
            ops.append({"op": "add", "path": f"/spec/initContainers/{at + 1}", "value": proxy})
    if not native:
        ops.append({"op": "add", "path": "/spec/containers/-", "value": proxy})
    if "annotations" not in (pod.get("metadata") or {}) or pod["metadata"]["annotations"] is None:
        if "metadata" not in pod:
            ops.append({"op": "add", "path": "/metadata", "value": {}})
        ops.append({"op": "add", "path": "/metadata/annotations", "value": {A_STATUS: INJECTED}})
    else:
        ops.append(
            {"op": "add", "path": f"/metadata/annotations/{escape_pointer(A_STATUS)}", "value": INJECTED}
        )
    return ops, warnings


def _own_proxy(container: dict[str, Any]) -> list[str]:
    """The proxy variables (either spelling) and Java proxy properties the container sets itself."""
    own = []
    for entry in _list(container, "env"):
        var = str(entry.get("name") or "")
        if var.upper() in PROXY_VARIABLES:
            own.append(var)
        elif var == JAVA_TOOL_OPTIONS:
            own += [p.rstrip("=") for p in JAVA_PROXY_PROPERTIES if p in str(entry.get("value") or "")]
    return own


def _container_env(
    container: dict[str, Any], settings: InjectorSettings, explicit: bool, warnings: list[str]
) -> dict[str, str]:
    """Trust variables always; proxy settings in explicit mode unless the container has its own.

    One rule for every runtime: a container that sets any proxy variable (either spelling) or Java
    proxy property keeps its own proxy for everything, and sesame adds no proxy setting to it.
    """
    env = trust_env(settings)
    env.update(aws_placeholder_env(_list(container, "env")))
    own = _own_proxy(container) if explicit else []
    if own:
        warnings.append(
            f"container {container.get('name')!r} sets its own proxy ({', '.join(own)}); sesame added no "
            "proxy setting to it (HTTP(S)_PROXY/NO_PROXY in either case, NODE_USE_ENV_PROXY, Java "
            "properties): its calls use its own proxy and get no sesame credential"
        )
    proxy = explicit and not own
    if proxy:
        env.update(explicit_env(settings))
    env[JAVA_TOOL_OPTIONS] = java_options(settings, proxy=proxy)
    return env


def _container_ops(
    path: str, container: dict[str, Any], env: dict[str, str], warnings: list[str]
) -> list[dict[str, Any]]:
    """Env vars and the read-only trust mount for one app container."""
    name = container.get("name")
    mounts = _list(container, "volumeMounts")
    if any(m.get("mountPath", "").rstrip("/") == TRUST_DIR for m in mounts):
        raise InjectionProblem(f"container {name!r} already mounts something at {TRUST_DIR}")
    existing = {e.get("name"): (i, e) for i, e in enumerate(_list(container, "env"))}
    new_env: list[dict[str, str]] = []
    ops: list[dict[str, Any]] = []
    for var, value in env.items():
        if var not in existing:
            new_env.append({"name": var, "value": value})
            continue
        index, entry = existing[var]
        if var != JAVA_TOOL_OPTIONS:
            warnings.append(f"container {name!r} sets {var} itself; sesame left it unchanged")
        elif "valueFrom" in entry:
            raise InjectionProblem(f"container {name!r} takes {var} from valueFrom; cannot append to it")
        elif value not in (entry.get("value") or ""):
            joined = f"{entry.get('value') or ''} {value}".strip()
            ops.append({"op": "replace", "path": f"{path}/env/{index}/value", "value": joined})
    ops += _append_ops(container, "env", f"{path}/env", new_env)
    ops += _append_ops(container, "volumeMounts", f"{path}/volumeMounts", [dict(TRUST_MOUNT)])
    return ops


def _runs_to_completion(pod: dict[str, Any]) -> bool:
    """A Job's pod (owned by a Job, or restartPolicy Never/OnFailure): it must exit to complete."""
    owners = (pod.get("metadata") or {}).get("ownerReferences") or []
    if any(isinstance(o, dict) and o.get("kind") == "Job" for o in owners):
        return True
    return pod["spec"].get("restartPolicy") in ("Never", "OnFailure")


def _mesh_check(mesh: Mesh, settings: InjectorSettings) -> str:
    """Refuse a port or UID the mesh already uses; else the warning naming the ordering rule."""
    clash = sorted({settings.proxy_port, settings.admin_port} & mesh.ports)
    if clash:
        raise InjectionProblem(
            f"sesame's port {clash[0]} is also {mesh.name}'s; set injector.proxyPort/adminPort to free ports"
        )
    if settings.proxy_uid == mesh.uid:
        raise InjectionProblem(f"sesame's proxy UID {mesh.uid} is also {mesh.name}'s; set injector.proxyUID")
    return (
        f"pod carries {mesh.name}: sesame runs after {mesh.name}'s init containers; the app's traffic goes "
        f"to sesame, sesame's upstream traffic through {mesh.name} (docs/kubernetes.md, Service meshes)"
    )


def _append_ops(obj: dict[str, Any], key: str, path: str, values: list[Any]) -> list[dict[str, Any]]:
    if not values:
        return []
    if not obj.get(key):
        return [{"op": "add", "path": path, "value": values}]
    return [{"op": "add", "path": f"{path}/-", "value": value} for value in values]


def _list(obj: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = obj.get(key) or []
    if not isinstance(value, list):
        raise InjectionProblem(f"{key} must be a list")
    return value


def _items(annotations: dict[str, str], key: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in str(annotations.get(key, "")).split(",") if p.strip())


def _cidrs(annotations: dict[str, str]) -> tuple[str, ...]:
    cidrs = _items(annotations, A_EXCLUDE_CIDRS)
    bad = invalid_cidrs(cidrs)
    if bad:
        raise InjectionProblem(f"annotation {A_EXCLUDE_CIDRS} must list CIDRs, got {', '.join(bad)}")
    return cidrs


def _bool(annotations: dict[str, str], key: str, default: bool) -> bool:
    if key not in annotations:
        return default
    value = str(annotations[key]).lower()
    if value not in ("true", "false"):
        raise InjectionProblem(f'annotation {key} must be "true" or "false", got {annotations[key]!r}')
    return value == "true"


def _ports(annotations: dict[str, str]) -> tuple[int, ...]:
    ports = _items(annotations, A_EXCLUDE_PORTS)
    if not all(p.isdigit() and 0 < int(p) < 65536 for p in ports):
        raise InjectionProblem(f"annotation {A_EXCLUDE_PORTS} must list TCP ports, got {ports!r}")
    return tuple(int(p) for p in ports)


def _resources(annotations: dict[str, str], defaults: Resources) -> Resources:
    values = {}
    for attr, key in A_RESOURCES.items():
        value = str(annotations.get(key, getattr(defaults, attr))).strip()
        if value and not valid_quantity(value):
            raise InjectionProblem(f"annotation {key} is not a resource quantity: {value!r}")
        values[attr] = value
    return Resources(**values)


def _selected(annotations: dict[str, str], containers: list[dict], inits: list[dict]) -> set[str]:
    """Names of the app containers that get the env and trust mount."""
    names = [c.get("name") for c in containers]
    known = set(names) | {c.get("name") for c in inits}
    chosen = set(_items(annotations, A_CONTAINERS)) or known
    skipped = set(_items(annotations, A_SKIP))
    unknown = (chosen | skipped) - known
    if unknown:
        listed = ", ".join(sorted(unknown))
        raise InjectionProblem(f"{A_CONTAINERS}/{A_SKIP} name unknown containers: {listed}")
    return chosen - skipped
