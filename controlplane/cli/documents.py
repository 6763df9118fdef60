"""The declarative document model: Sesame resources as Kubernetes-style YAML documents.

    apiVersion: sesame.dev/v1alpha1
    kind: Workload | Target | CredentialProvider | Policy | Cluster
    metadata: {name: NAME, labels: {KEY: VALUE}}
    spec: {...}   # the API's fields (snake_case), references to other documents by name

A spec holds the fields of the API's create body, except: a Workload's attestation is flat
(`namespace`, `service_account`, `cluster`, `status`); a Policy names `workload`, `target` and
`provider`; a CredentialProvider's secret config fields are never inline but under `secrets`,
each from `{fromFile: PATH}`, `{fromEnv: VAR}` or `{secretKeyRef: {name, key, namespace}}`
(a Kubernetes Secret, read with the kubeconfig or in-cluster credentials). The CRDs in the chart
(`helm/sesame/crds/`) carry the same shapes as OpenAPI schemas.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from controlplane.cli._http import CliError

__all__ = [
    "API_VERSION",
    "KINDS",
    "MANAGED_BY",
    "Document",
    "KindModel",
    "load_documents",
    "read_secret",
    "to_document",
]

API_VERSION = "sesame.dev/v1alpha1"
# The label apply sets on every object it writes; --prune deletes only objects carrying it.
MANAGED_BY = ("sesame.dev/managed-by", "sesamectl")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_META = ("id", "name", "labels", "created_at", "updated_at")


@dataclass(frozen=True)
class Document:
    kind: str
    name: str
    labels: dict[str, str]
    spec: dict[str, Any]
    source: str = ""  # file the document came from, for messages

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class KindModel:
    """How one kind's spec maps onto its REST resource."""

    kind: str
    path: str
    # spec (with references by name) -> create body without name/labels
    body: Callable[[dict[str, Any]], dict[str, Any]]
    # record as the API shows it, plus {kind: {id: name}} of the referenced kinds -> spec
    spec: Callable[[dict[str, Any], dict[str, dict[str, str]]], dict[str, Any]]
    # changed spec fields -> PATCH body (default: as `body` would send them)
    patch: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    # spec fields that the API cannot change in place (the object must be deleted and re-created)
    immutable: tuple[str, ...] = ()
    # spec fields the create body cannot carry: set by a PATCH right after the create
    after_create: tuple[str, ...] = ()
    # spec fields compared even when a document leaves them out (absent means None)
    nullable: tuple[str, ...] = ()
    references: dict[str, str] = field(default_factory=dict)  # spec field -> kind

    def patch_body(self, changed: dict[str, Any]) -> dict[str, Any]:
        return (self.patch or self.body)(changed)


def _plain_spec(record: dict[str, Any], _names: dict[str, dict[str, str]]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in _META}


def _workload_body(spec: dict[str, Any]) -> dict[str, Any]:  # status: see after_create
    attestation = {"type": "kubernetes-service-account"}
    attestation.update({k: spec[k] for k in ("namespace", "service_account", "cluster") if k in spec})
    return {"attestation": attestation}


def _workload_spec(record: dict[str, Any], _names: dict[str, dict[str, str]]) -> dict[str, Any]:
    spec = {k: record[k] for k in ("namespace", "service_account", "cluster", "status")}
    return {k: v for k, v in spec.items() if v is not None}


def _provider_body(spec: dict[str, Any]) -> dict[str, Any]:
    return {"type": spec["type"], "config": dict(spec.get("config") or {})}


def _provider_spec(record: dict[str, Any], _names: dict[str, dict[str, str]]) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": record["type"], "config": record.get("config") or {}}
    if record.get("secret_fields"):  # values are write-only: export names where to read them from
        prefix = re.sub(r"[^A-Z0-9]+", "_", record["name"].upper()).strip("_")
        spec["secrets"] = {f: {"fromEnv": f"{prefix}_{f.upper()}"} for f in record["secret_fields"]}
    return spec


_POLICY_REFS = {"workload": "Workload", "target": "Target", "provider": "CredentialProvider"}


def _policy_body(spec: dict[str, Any]) -> dict[str, Any]:
    return {f"{k}_id" if k in _POLICY_REFS else k: v for k, v in spec.items()}


def _policy_spec(record: dict[str, Any], names: dict[str, dict[str, str]]) -> dict[str, Any]:
    spec = {
        ref: names[kind].get(record[f"{ref}_id"], record[f"{ref}_id"])
        for ref, kind in _POLICY_REFS.items()
        if record.get(f"{ref}_id") is not None
    }
    spec.update({k: record[k] for k in ("effect", "max_ttl_seconds", "description") if k in record})
    return spec


# In dependency order: apply creates in this order and prunes in the reverse one.
KINDS: dict[str, KindModel] = {
    m.kind: m
    for m in (
        KindModel("Cluster", "/v1/clusters", dict, _plain_spec),
        KindModel("Target", "/v1/targets", dict, _plain_spec),
        KindModel(
            "CredentialProvider",
            "/v1/credential-providers",
            _provider_body,
            _provider_spec,
            patch=lambda changed: {"config": changed["config"]} if "config" in changed else {},
            immutable=("type",),
        ),
        KindModel(
            "Workload",
            "/v1/workloads",
            _workload_body,
            _workload_spec,
            patch=lambda changed: {k: v for k, v in changed.items() if k == "status"},
            immutable=("namespace", "service_account", "cluster"),
            after_create=("status",),
        ),
        KindModel(
            "Policy",
            "/v1/policies",
            _policy_body,
            _policy_spec,
            nullable=("workload", "target"),
            references=_POLICY_REFS,
        ),
    )
}


def _documents_in(path: Path) -> Iterable[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml", ".json") and p.is_file())
    return [path]


def load_documents(paths: Iterable[str]) -> list[Document]:
    """Parse and check every document in the files and directories (recursively) named."""
    docs: list[Document] = []
    seen: dict[str, str] = {}
    for given in paths:
        for file in _documents_in(Path(given)):
            try:
                loaded = list(yaml.safe_load_all(file.read_text()))
            except (OSError, yaml.YAMLError) as exc:
                raise CliError(f"{file}: {exc}", 2) from None
            for raw in loaded:
                if raw is None:
                    continue
                doc = _document(raw, str(file))
                if doc.ref in seen:
                    raise CliError(f"{file}: {doc.ref} is also defined in {seen[doc.ref]}", 2)
                seen[doc.ref] = doc.source
                docs.append(doc)
    order = list(KINDS)
    return sorted(docs, key=lambda d: order.index(d.kind))


def _document(raw: Any, source: str) -> Document:
    def bad(message: str) -> CliError:
        return CliError(f"{source}: {message}", 2)

    if not isinstance(raw, dict):
        raise bad("a document must be a mapping")
    if raw.get("apiVersion") != API_VERSION:
        raise bad(f"apiVersion must be {API_VERSION}, got {raw.get('apiVersion')!r}")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise bad(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    unknown = set(raw) - {"apiVersion", "kind", "metadata", "spec"}
    if unknown:
        raise bad(f"{kind}: unknown top-level fields {sorted(unknown)}")
    meta = raw.get("metadata") or {}
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise bad(f"{kind}: metadata.name must match {NAME.pattern}")
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise bad(f"{kind}/{name}: metadata.labels must map strings to strings")
    spec = raw.get("spec")
    if not isinstance(spec, dict):
        raise bad(f"{kind}/{name}: spec must be a mapping")
    if kind == "CredentialProvider":
        _check_secret_sources(spec, f"{source}: {kind}/{name}")
    return Document(kind, name, {str(k): v for k, v in labels.items()}, spec, source)


def _check_secret_sources(spec: dict[str, Any], where: str) -> None:
    for field_name, ref in (spec.get("secrets") or {}).items():
        if not isinstance(ref, dict) or len(ref) != 1 or next(iter(ref)) not in _SOURCES:
            raise CliError(
                f"{where}: spec.secrets.{field_name} must be one of "
                "{fromFile: PATH}, {fromEnv: VAR}, {secretKeyRef: {name, key, namespace}} (never inline)",
                2,
            )


def to_document(model: KindModel, record: dict[str, Any], names: dict[str, dict[str, str]]) -> dict[str, Any]:
    """The document of an API record (what `sesamectl export` prints)."""
    meta: dict[str, Any] = {"name": record["name"]}
    if record.get("labels"):
        meta["labels"] = record["labels"]
    return {
        "apiVersion": API_VERSION,
        "kind": model.kind,
        "metadata": meta,
        "spec": model.spec(record, names),
    }


def _from_file(path: str, base: str) -> str:
    full = Path(base).parent / path if not os.path.isabs(path) else Path(path)
    try:
        return full.read_text().rstrip("\n")
    except OSError as exc:
        raise CliError(f"cannot read secret file {full}: {exc.strerror}", 2) from None


def _from_env(name: str, _base: str) -> str:
    if name not in os.environ:
        raise CliError(f"environment variable {name} (a secret source) is not set", 2)
    return os.environ[name]


def _from_secret(ref: dict[str, Any], _base: str) -> str:
    """A key of a Kubernetes Secret, read with $KUBECONFIG (or ~/.kube/config), else in-cluster."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    if not isinstance(ref, dict) or not ref.get("name") or not ref.get("key"):
        raise CliError("secretKeyRef needs name and key (and optionally namespace)", 2)
    namespace = ref.get("namespace") or "default"
    try:
        kubeconfig = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        if os.path.exists(kubeconfig):
            api_client = config.new_client_from_config(config_file=kubeconfig)
        else:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            api_client = client.ApiClient(configuration)
        with api_client:
            secret = client.CoreV1Api(api_client).read_namespaced_secret(ref["name"], namespace)
    except ApiException as exc:
        raise CliError(f"cannot read Secret {namespace}/{ref['name']}: {exc.status} {exc.reason}") from None
    except config.ConfigException as exc:
        raise CliError(f"cannot reach Kubernetes for Secret {namespace}/{ref['name']}: {exc}") from None
    data = secret.data or {}
    if ref["key"] not in data:
        raise CliError(f"Secret {namespace}/{ref['name']} has no key {ref['key']}")
    return base64.b64decode(data[ref["key"]]).decode()


_SOURCES: dict[str, Callable[[Any, str], str]] = {
    "fromFile": _from_file,
    "fromEnv": _from_env,
    "secretKeyRef": _from_secret,
}


def read_secret(doc: Document) -> dict[str, str]:
    """The secret config fields of a CredentialProvider document, read from their sources."""
    out = {}
    for field_name, ref in (doc.spec.get("secrets") or {}).items():
        ((source, arg),) = ref.items()
        out[field_name] = _SOURCES[source](arg, doc.source)
    return out
