"""The CustomResourceDefinitions of the document kinds (helm/sesame/crds/), generated from the API's
own field specs so a document the cluster admits is one the API accepts.

    python -m controlplane.cli.crds helm/sesame/crds    # rewrite the chart's CRDs

Structural schemas (apiextensions.k8s.io/v1): every node typed, no `anyOf` with null (a field a
document leaves out is unset), free-form objects marked `x-kubernetes-preserve-unknown-fields`.
Defaults stay with the API, so a stored document holds only what its author wrote; so do the
rules between fields.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from controlplane.api.clusters import CLUSTER_IN
from controlplane.api.credential_providers import PROVIDER_TYPES
from controlplane.api.policies import POLICY_IN
from controlplane.api.targets import TARGET_IN
from controlplane.api.workloads import WORKLOAD_IN, WORKLOAD_PATCH
from controlplane.cli.documents import API_VERSION, KINDS
from controlplane.validation import Obj

__all__ = ["crd", "crds", "spec_schema"]

GROUP, VERSION = API_VERSION.split("/")
PLURALS = {
    "Cluster": "clusters",
    "Target": "targets",
    "CredentialProvider": "credentialproviders",
    "Workload": "workloads",
    "Policy": "policies",
}
_SOURCE = {
    "type": "object",
    "description": "exactly one of fromFile, fromEnv, secretKeyRef",
    "minProperties": 1,
    "maxProperties": 1,
    "properties": {
        "fromFile": {"type": "string", "description": "path, relative to the document's file"},
        "fromEnv": {"type": "string", "description": "environment variable of sesamectl"},
        "secretKeyRef": {
            "type": "object",
            "required": ["name", "key"],
            "properties": {
                "name": {"type": "string"},
                "key": {"type": "string"},
                "namespace": {"type": "string", "description": "default: default"},
            },
        },
    },
}


# JSON Schema keywords a structural CRD schema takes as they are; cross-field rules (`if`/`then`,
# `anyOf`, `dependentSchemas`) stay with the API, which answers them with a clear 400.
_KEPT = {
    "type",
    "format",
    "description",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "required",
    "const",
}


def structural(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema of `controlplane.validation` as a structural CRD schema."""
    if "anyOf" in schema:  # Spec.json_schema's nullable form: [schema, {"type": "null"}]
        return structural(next(s for s in schema["anyOf"] if s.get("type") != "null"))
    out = {k: v for k, v in schema.items() if k in _KEPT}
    if "properties" in schema:
        out["properties"] = {k: structural(v) for k, v in schema["properties"].items()}
    elif schema.get("type") == "object":
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            out["additionalProperties"] = structural(extra)
        else:
            out["x-kubernetes-preserve-unknown-fields"] = True
    if "items" in schema:
        out["items"] = structural(schema["items"])
    if "const" in out:
        out["enum"] = [out.pop("const")]
    return out


def _without(obj: Obj, *names: str) -> dict[str, Any]:
    return structural(Obj({k: v for k, v in obj.fields.items() if k not in names}).json_schema())


def spec_schema(kind: str) -> dict[str, Any]:
    """The schema of a document's `spec` (documents.py describes the shape)."""
    if kind in ("Cluster", "Target"):
        return _without(CLUSTER_IN if kind == "Cluster" else TARGET_IN, "name")
    if kind == "Workload":
        attestation = WORKLOAD_IN.fields["attestation"]
        assert isinstance(attestation, Obj)
        fields = {**attestation.fields, "status": WORKLOAD_PATCH.fields["status"]}
        return _without(Obj(fields), "type")
    if kind == "Policy":
        schema = _without(POLICY_IN, "name")
        props = schema["properties"]
        for ref in ("workload", "target", "provider"):
            props[ref] = {
                **props.pop(f"{ref}_id"),
                "description": f"name of the {ref}" + ("" if ref == "provider" else "; unset: any"),
            }
        schema["required"] = sorted(
            {"provider", *(r for r in schema.get("required", []) if r != "provider_id")}
        )
        return schema
    if kind == "CredentialProvider":
        return {
            "type": "object",
            "required": ["type"],
            "properties": {
                "type": {"type": "string", "enum": list(PROVIDER_TYPES)},
                "config": {
                    "type": "object",
                    "description": "the type's non-secret config fields",
                    "x-kubernetes-preserve-unknown-fields": True,
                },
                "secrets": {
                    "type": "object",
                    "description": "secret config fields, each read from a source (never inline)",
                    "additionalProperties": _SOURCE,
                },
            },
        }
    raise KeyError(kind)


def crd(kind: str) -> dict[str, Any]:
    plural = PLURALS[kind]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "categories": ["sesame"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": f"A Sesame {kind}, applied with `sesamectl apply -f`",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                # A CRD may say nothing about metadata but its type.
                                "metadata": {"type": "object"},
                                "spec": spec_schema(kind),
                            },
                        }
                    },
                }
            ],
        },
    }


def crds() -> dict[str, str]:
    """File name -> YAML text of every CRD."""
    header = "# Generated by `python -m controlplane.cli.crds helm/sesame/crds`; do not edit.\n"
    return {
        f"{PLURALS[kind]}.{GROUP}.yaml": header + yaml.safe_dump(crd(kind), sort_keys=False) for kind in KINDS
    }


if __name__ == "__main__":  # pragma: no cover - a maintenance command
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name, text in crds().items():
        (out / name).write_text(text)
