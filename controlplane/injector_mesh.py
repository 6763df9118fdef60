"""Service meshes a pod may also carry (Istio, Linkerd): how to recognise them and what they reserve.

The ordering rule (docs/kubernetes.md, "Service meshes"): Sesame's redirect applies to the app, the
mesh's to Sesame's upstream traffic. So Sesame's init container and proxy go after the mesh's
init containers (the mesh's sidecar is up before Sesame's proxy dials out), and Sesame's nat
OUTPUT rules are evaluated before the mesh's whatever order they were installed in
(`proxy.netfilter`: first OUTPUT rule, nft priority below iptables' nat hook).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["MESHES", "Mesh", "detect_meshes", "mesh_init_end"]


@dataclass(frozen=True)
class Mesh:
    """What one mesh injects and reserves."""

    name: str
    containers: frozenset[str]  # its sidecar and init containers (either list)
    annotations: tuple[str, ...]  # set by its injector, or asking it to inject
    ports: frozenset[int]  # ports its sidecar listens on inside the pod
    uid: int  # its proxy's UID, excluded from its own redirect


MESHES = (
    Mesh(
        name="Istio",
        containers=frozenset({"istio-proxy", "istio-init", "istio-validation"}),
        annotations=("sidecar.istio.io/status", "sidecar.istio.io/inject"),
        ports=frozenset({15000, 15001, 15004, 15006, 15008, 15009, 15020, 15021, 15053, 15090}),
        uid=1337,
    ),
    Mesh(
        name="Linkerd",
        containers=frozenset({"linkerd-proxy", "linkerd-init", "linkerd-network-validator"}),
        annotations=("linkerd.io/proxy-version", "linkerd.io/inject"),
        ports=frozenset({4140, 4143, 4190, 4191}),
        uid=2102,
    ),
)


_NOT_ASKED = ("", "false", "disabled")


def detect_meshes(pod: dict[str, Any]) -> list[Mesh]:
    """The meshes that injected (or were asked to inject) ``pod``: by container name or annotation.

    ``sidecar.istio.io/inject: "false"`` / ``linkerd.io/inject: disabled`` do not count.
    """
    spec = pod.get("spec") or {}
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    names = {c.get("name") for key in ("containers", "initContainers") for c in spec.get(key) or []}
    found = []
    for mesh in MESHES:
        asked = [a for a in mesh.annotations if annotations.get(a, "").lower() not in _NOT_ASKED]
        if names & mesh.containers or asked:
            found.append(mesh)
    return found


def mesh_init_end(inits: list[dict[str, Any]], meshes: list[Mesh]) -> int:
    """Index after the last init container of a detected mesh (0 when there is none)."""
    names = set().union(*(m.containers for m in meshes)) if meshes else set()
    last = -1
    for index, container in enumerate(inits):
        if container.get("name") in names:
            last = index
    return last + 1
