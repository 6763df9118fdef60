"""What the admission webhook adds to a pod: settings, the init and proxy containers, volumes, env.

Pure builders of Kubernetes objects (plain dicts in the API's JSON shape); the decision and the
JSONPatch live in `controlplane.injector`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from controlplane.errors import StartupError

__all__ = [
    "ANNOTATION_PREFIX",
    "CA_DIR",
    "INIT_NAME",
    "PROXY_NAME",
    "TOKEN_PATH",
    "TRUST_BUNDLE",
    "TRUST_DIR",
    "TRUST_STORE",
    "VOLUME_NAMES",
    "InjectorSettings",
    "Resources",
    "init_container",
    "proxy_container",
    "proxy_env",
    "valid_quantity",
    "volumes",
]

ANNOTATION_PREFIX = "sesame.dev/"
INIT_NAME = "sesame-init"
PROXY_NAME = "sesame-proxy"
TOKEN_VOLUME, CA_VOLUME, TRUST_VOLUME = "sesame-token", "sesame-ca", "sesame-trust"
CP_CA_VOLUME = "sesame-cp-ca"
VOLUME_NAMES = (TOKEN_VOLUME, CA_VOLUME, TRUST_VOLUME, CP_CA_VOLUME)
CP_CA_DIR = "/var/run/sesame/cp-ca"
TOKEN_DIR = "/var/run/secrets/sesame"
TOKEN_PATH = f"{TOKEN_DIR}/token"
CA_DIR = "/var/run/sesame/ca"
TRUST_DIR = "/var/run/sesame/trust"
TRUST_BUNDLE = f"{TRUST_DIR}/ca-bundle.pem"
TRUST_STORE = f"{TRUST_DIR}/truststore.p12"
# Clear of the meshes a pod may also carry: Istio (outbound 15001, inbound 15006, admin 15000,
# merged metrics 15020, health 15021, Envoy stats 15090, UID 1337) and Linkerd (4140, 4143, 4190,
# 4191, UID 2102). All three are settings (chart values injector.proxyPort/adminPort/proxyUID).
DEFAULT_PROXY_PORT, DEFAULT_ADMIN_PORT, DEFAULT_PROXY_UID = 16001, 16020, 16001
DEFAULT_EXCLUDE_UIDS = (1337, 2102)  # Istio's and Linkerd's proxies

DEFAULT_PROXY_IMAGE = "ghcr.io/sesame-dev/sesame-proxy:0.1.0"
DEFAULT_CONTROL_PLANE_URL = "https://sesame.sesame-system.svc:443"
DEFAULT_AUDIENCE = "sesame"
DEFAULT_TOKEN_EXPIRATION = 3600
DEFAULT_TRUSTSTORE_PASSWORD = "changeit"  # a public trust store; the password is not a secret
DEFAULT_NO_PROXY = ("localhost", "127.0.0.1", "::1")
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
_DNS_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")

_QUANTITY = re.compile(r"^(\d+(\.\d*)?|\.\d+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?$")


def valid_quantity(text: str) -> bool:
    """A non-negative Kubernetes resource quantity (``100m``, ``64Mi``, ``0.5``)."""
    return bool(_QUANTITY.match(text))


def invalid_cidrs(items: tuple[str, ...]) -> list[str]:
    """The entries of ``items`` that are not an IPv4/IPv6 address or CIDR (``10.0.0.0/33``, ``x``)."""
    bad = []
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            bad.append(item)
    return bad


@dataclass(frozen=True, kw_only=True)
class Resources:
    """Requests/limits of the proxy; empty strings are left out of the container spec."""

    cpu: str = "50m"
    memory: str = "64Mi"
    cpu_limit: str = ""
    memory_limit: str = "256Mi"

    def spec(self) -> dict[str, dict[str, str]]:
        requests = {k: v for k, v in (("cpu", self.cpu), ("memory", self.memory)) if v}
        limits = {k: v for k, v in (("cpu", self.cpu_limit), ("memory", self.memory_limit)) if v}
        return {key: value for key, value in (("requests", requests), ("limits", limits)) if value}


@dataclass(frozen=True, kw_only=True)
class InjectorSettings:
    """Webhook configuration (chart values → ``SESAME_INJECTOR_*`` env → this, built once)."""

    proxy_image: str = DEFAULT_PROXY_IMAGE
    image_pull_policy: str = "IfNotPresent"
    mode: Literal["transparent", "explicit"] = "transparent"
    control_plane_url: str = DEFAULT_CONTROL_PLANE_URL
    audience: str = DEFAULT_AUDIENCE
    token_expiration_seconds: int = DEFAULT_TOKEN_EXPIRATION
    native_sidecar: bool = True
    strict: bool = True
    resources: Resources = Resources()
    exclude_cidrs: tuple[str, ...] = ()
    exclude_ports: tuple[int, ...] = ()
    # Dual-stack clusters: transparent pods also redirect IPv6 (the proxy listens on [::1] too).
    ipv6: bool = False
    no_proxy: tuple[str, ...] = DEFAULT_NO_PROXY
    # NO_PROXY also names the cluster: .svc, .<cluster_domain> and these pod/service CIDRs.
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN
    cluster_cidrs: tuple[str, ...] = ()
    proxy_port: int = DEFAULT_PROXY_PORT
    admin_port: int = DEFAULT_ADMIN_PORT
    proxy_uid: int = DEFAULT_PROXY_UID
    proxy_max_connections: int = 0  # 0: the proxy derives it from its file-descriptor limit
    # Never redirected: the meshes' proxies (Istio, Linkerd), which must reach the network directly.
    exclude_uids: tuple[int, ...] = DEFAULT_EXCLUDE_UIDS
    truststore_password: str = DEFAULT_TRUSTSTORE_PASSWORD
    # PEM of the CA that signed the control plane's serving certificate (the chart's webhook CA),
    # handed to the proxy as SESAME_CONTROL_PLANE_CA; empty: the proxy uses the system roots.
    control_plane_ca: str = ""
    # Or a ConfigMap (key ca.crt) present in every injected namespace (e.g. a trust-manager Bundle):
    # mounted into the proxy, which re-reads it when the CA rolls over; wins over control_plane_ca.
    control_plane_ca_configmap: str = ""

    def __post_init__(self) -> None:
        if self.mode not in ("transparent", "explicit"):
            raise StartupError(f"SESAME_INJECTOR_MODE must be transparent or explicit, got {self.mode!r}")
        if not self.control_plane_url.startswith(("http://", "https://")):
            raise StartupError("SESAME_INJECTOR_CONTROL_PLANE_URL must be an http(s) URL")
        if self.token_expiration_seconds < 600:
            raise StartupError("SESAME_INJECTOR_TOKEN_EXPIRATION must be at least 600 seconds")
        for name in ("cpu", "memory", "cpu_limit", "memory_limit"):
            value = getattr(self.resources, name)
            if value and not valid_quantity(value):
                raise StartupError(f"SESAME_INJECTOR_PROXY_{name.upper()} is not a quantity: {value!r}")
        for name, cidrs in (("EXCLUDE_CIDRS", self.exclude_cidrs), ("CLUSTER_CIDRS", self.cluster_cidrs)):
            bad = invalid_cidrs(cidrs)
            if bad:
                raise StartupError(f"SESAME_INJECTOR_{name}: not a CIDR: {', '.join(bad)}")
        if self.control_plane_ca_configmap and not _DNS_NAME.match(self.control_plane_ca_configmap):
            raise StartupError("SESAME_INJECTOR_CONTROL_PLANE_CA_CONFIGMAP is not a ConfigMap name")
        if not _DNS_NAME.match(self.cluster_domain):
            raise StartupError(f"SESAME_INJECTOR_CLUSTER_DOMAIN is not a DNS name: {self.cluster_domain!r}")
        for entry in self.no_proxy:
            if not entry or any(c.isspace() or c == "," or ord(c) < 32 or ord(c) == 127 for c in entry):
                raise StartupError(f"SESAME_INJECTOR_NO_PROXY entry {entry!r} is not a host, domain or CIDR")
        for name in ("proxy_port", "admin_port"):
            if not 0 < getattr(self, name) < 65536:
                raise StartupError(f"SESAME_INJECTOR_{name.upper()} must be a TCP port")
        if self.proxy_port == self.admin_port:
            raise StartupError("SESAME_INJECTOR_PROXY_PORT and SESAME_INJECTOR_ADMIN_PORT must differ")
        if self.proxy_max_connections < 0:
            raise StartupError("SESAME_INJECTOR_PROXY_MAX_CONNECTIONS must be 0 (automatic) or positive")
        if not 0 < self.proxy_uid < 2**31:
            raise StartupError("SESAME_INJECTOR_PROXY_UID must be a non-root UID")
        if self.proxy_uid in self.exclude_uids or not all(0 < u < 2**31 for u in self.exclude_uids):
            raise StartupError("SESAME_INJECTOR_EXCLUDE_UIDS must list non-root UIDs other than the proxy's")

    @classmethod
    def build(cls, env: Mapping[str, str], *, audience: str | None = None) -> InjectorSettings:
        """From ``SESAME_INJECTOR_*``; the token audience is the control plane's own (``audience``,
        else ``SESAME_AUDIENCE``), so injected pods always carry tokens the control plane accepts."""

        def get(name: str, default: str) -> str:
            return env.get(f"SESAME_INJECTOR_{name}") or default

        def flag(name: str, default: bool) -> bool:
            text = get(name, str(default)).strip().lower()
            if text not in ("true", "false", "1", "0", "yes", "no"):
                raise StartupError(f"SESAME_INJECTOR_{name} must be true or false, got {text!r}")
            return text in ("true", "1", "yes")

        def items(name: str) -> tuple[str, ...]:
            return tuple(p.strip() for p in get(name, "").split(",") if p.strip())

        res = Resources()
        try:
            ports = tuple(int(p) for p in items("EXCLUDE_PORTS"))
            expiration = int(get("TOKEN_EXPIRATION", str(DEFAULT_TOKEN_EXPIRATION)))
            proxy_port = int(get("PROXY_PORT", str(DEFAULT_PROXY_PORT)))
            admin_port = int(get("ADMIN_PORT", str(DEFAULT_ADMIN_PORT)))
            proxy_uid = int(get("PROXY_UID", str(DEFAULT_PROXY_UID)))
            max_connections = int(get("PROXY_MAX_CONNECTIONS", "0"))
            uids = items("EXCLUDE_UIDS") if "SESAME_INJECTOR_EXCLUDE_UIDS" in env else DEFAULT_EXCLUDE_UIDS
            exclude_uids = tuple(int(u) for u in uids)
        except ValueError as exc:
            raise StartupError(f"SESAME_INJECTOR_* integer setting: {exc}") from None
        return cls(
            proxy_image=get("PROXY_IMAGE", DEFAULT_PROXY_IMAGE),
            image_pull_policy=get("IMAGE_PULL_POLICY", "IfNotPresent"),
            mode=get("MODE", "transparent"),  # type: ignore[arg-type]  # checked in __post_init__
            control_plane_url=get("CONTROL_PLANE_URL", DEFAULT_CONTROL_PLANE_URL),
            audience=audience or env.get("SESAME_AUDIENCE") or DEFAULT_AUDIENCE,
            token_expiration_seconds=expiration,
            native_sidecar=flag("NATIVE_SIDECAR", True),
            strict=flag("STRICT", True),
            resources=Resources(
                cpu=env.get("SESAME_INJECTOR_PROXY_CPU", res.cpu),
                memory=env.get("SESAME_INJECTOR_PROXY_MEMORY", res.memory),
                cpu_limit=env.get("SESAME_INJECTOR_PROXY_CPU_LIMIT", res.cpu_limit),
                memory_limit=env.get("SESAME_INJECTOR_PROXY_MEMORY_LIMIT", res.memory_limit),
            ),
            exclude_cidrs=items("EXCLUDE_CIDRS"),
            exclude_ports=ports,
            ipv6=flag("IPV6", False),
            no_proxy=items("NO_PROXY") or DEFAULT_NO_PROXY,
            cluster_domain=get("CLUSTER_DOMAIN", DEFAULT_CLUSTER_DOMAIN).strip().rstrip("."),
            cluster_cidrs=items("CLUSTER_CIDRS"),
            proxy_port=proxy_port,
            admin_port=admin_port,
            proxy_uid=proxy_uid,
            proxy_max_connections=max_connections,
            exclude_uids=exclude_uids,
            truststore_password=get("TRUSTSTORE_PASSWORD", DEFAULT_TRUSTSTORE_PASSWORD),
            control_plane_ca=get("CONTROL_PLANE_CA", "").strip(),
            control_plane_ca_configmap=get("CONTROL_PLANE_CA_CONFIGMAP", "").strip(),
        )


def _security_context(*, uid: int, caps: tuple[str, ...] = ()) -> dict[str, Any]:
    capabilities: dict[str, list[str]] = {"drop": ["ALL"]}
    if caps:
        capabilities["add"] = list(caps)
    return {
        "runAsUser": uid,
        "runAsGroup": uid,
        "runAsNonRoot": uid != 0,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": capabilities,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def init_container(
    settings: InjectorSettings,
    *,
    mode: str,
    exclude_cidrs: tuple[str, ...],
    exclude_ports: tuple[int, ...],
    exclude_uids: tuple[int, ...] = (),
) -> dict[str, Any]:
    """``sesame-init``: REDIRECT rules (transparent: root + NET_ADMIN/NET_RAW/CHOWN) and the pod CA."""
    transparent = mode == "transparent"
    args = [
        "init",
        f"--mode={mode}",
        f"--proxy-port={settings.proxy_port}",
        f"--proxy-uid={settings.proxy_uid}",
        f"--ca-dir={CA_DIR}",
        f"--trust-dir={TRUST_DIR}",
        f"--control-plane={settings.control_plane_url}",
    ]
    if exclude_uids:
        args.append(f"--exclude-uids={','.join(str(u) for u in exclude_uids)}")
    if exclude_cidrs:
        args.append(f"--exclude-cidrs={','.join(exclude_cidrs)}")
    if exclude_ports:
        args.append(f"--exclude-ports={','.join(str(p) for p in exclude_ports)}")
    if transparent and settings.ipv6:
        args.append("--ipv6=true")
    # CHOWN: the root init container hands the CA directory to the proxy's UID.
    caps = ("NET_ADMIN", "NET_RAW", "CHOWN") if transparent else ()
    return {
        "name": INIT_NAME,
        "image": settings.proxy_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["sesame-proxy"],
        "args": args,
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": _security_context(uid=0 if transparent else settings.proxy_uid, caps=caps),
        "volumeMounts": [
            {"name": CA_VOLUME, "mountPath": CA_DIR},
            {"name": TRUST_VOLUME, "mountPath": TRUST_DIR},
        ],
    }


# Placeholder AWS keys for app containers: unmodified AWS SDKs then sign their requests, and the
# proxy replaces that signature with one made from the workload's session credentials (aws-sigv4
# targets). They open nothing. Added only to a container that names no AWS credentials of its own
# (keys, a profile, IRSA's web identity, a container credentials endpoint), which keep precedence.
AWS_PLACEHOLDERS = {
    "AWS_ACCESS_KEY_ID": "SESAME-PLACEHOLDER-KEY-ID",
    "AWS_SECRET_ACCESS_KEY": "sesame-placeholder-the-proxy-signs-governed-requests",
}
AWS_OWN_CREDENTIALS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
)


def aws_placeholder_env(container_env: list[dict[str, Any]]) -> dict[str, str]:
    """The placeholder AWS keys, unless the container has AWS credentials of its own."""
    if any(isinstance(e, dict) and e.get("name") in AWS_OWN_CREDENTIALS for e in container_env):
        return {}
    return dict(AWS_PLACEHOLDERS)


def proxy_env(settings: InjectorSettings, *, mode: str) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "SESAME_CONTROL_PLANE", "value": settings.control_plane_url},
        {"name": "SESAME_TOKEN_FILE", "value": TOKEN_PATH},
        {"name": "SESAME_LISTEN", "value": f"127.0.0.1:{settings.proxy_port}"},
        {"name": "SESAME_MODE", "value": mode},
        # kubelet probes come from the node, so the admin port listens on the pod IP too.
        {"name": "SESAME_ADMIN", "value": f"0.0.0.0:{settings.admin_port}"},
        {"name": "SESAME_CA_DIR", "value": CA_DIR},
        {"name": "SESAME_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    if settings.proxy_max_connections:
        env.append({"name": "SESAME_MAX_CONNECTIONS", "value": str(settings.proxy_max_connections)})
    if settings.control_plane_ca_configmap:
        env.append({"name": "SESAME_CONTROL_PLANE_CA", "value": f"{CP_CA_DIR}/ca.crt"})
    elif settings.control_plane_ca:
        env.append({"name": "SESAME_CONTROL_PLANE_CA", "value": settings.control_plane_ca})
    return env


def proxy_container(
    settings: InjectorSettings, *, mode: str, resources: Resources, native: bool
) -> dict[str, Any]:
    """The proxy, as a native sidecar (``restartPolicy: Always`` init container) or a classic one."""
    probe = {
        "httpGet": {"path": "/readyz", "port": settings.admin_port},
        "periodSeconds": 1,
        "failureThreshold": 60,
        "timeoutSeconds": 2,
    }
    container: dict[str, Any] = {
        "name": PROXY_NAME,
        "image": settings.proxy_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["sesame-proxy"],
        "args": ["run"],
        "env": proxy_env(settings, mode=mode),
        "ports": [{"name": "sesame-admin", "containerPort": settings.admin_port, "protocol": "TCP"}],
        "resources": resources.spec(),
        "securityContext": _security_context(uid=settings.proxy_uid),
        "startupProbe": probe,
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": settings.admin_port}, "periodSeconds": 10},
        "volumeMounts": [
            {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True},
            {"name": CA_VOLUME, "mountPath": CA_DIR},
        ],
    }
    if settings.control_plane_ca_configmap:  # a directory mount: the kubelet updates it in place
        container["volumeMounts"].append({"name": CP_CA_VOLUME, "mountPath": CP_CA_DIR, "readOnly": True})
    if native:
        container["restartPolicy"] = "Always"
    return container


def volumes(settings: InjectorSettings) -> list[dict[str, Any]]:
    token = {
        "audience": settings.audience,
        "expirationSeconds": settings.token_expiration_seconds,
        "path": "token",
    }
    found = [
        {"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": token}]}},
        {"name": CA_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "4Mi"}},
        {"name": TRUST_VOLUME, "emptyDir": {"sizeLimit": "16Mi"}},
    ]
    if settings.control_plane_ca_configmap:
        source = {"name": settings.control_plane_ca_configmap, "items": [{"key": "ca.crt", "path": "ca.crt"}]}
        found.append({"name": CP_CA_VOLUME, "configMap": source})
    return found


TRUST_MOUNT = {"name": TRUST_VOLUME, "mountPath": TRUST_DIR, "readOnly": True}
