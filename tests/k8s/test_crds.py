"""The chart's CRDs of the document kinds: generated from the API's specs, valid CRDs with
structural schemas, and the walkthrough documents validate against them.

No apiserver runs here: the CRDs are validated against apiextensions.k8s.io/v1 with
kubernetes-validate, the structural rules are checked node by node, and the documents against the
openAPIV3Schema with jsonschema (the subset the CRDs use means the same in both).
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from controlplane.cli.crds import crds
from controlplane.cli.documents import KINDS

from .admission import K8S_VERSION
from .chart import CHART, NAMESPACE, RELEASE

WALKTHROUGH = Path(__file__).resolve().parents[2] / "examples" / "walkthrough"


def rendered_crds(helm: Path) -> dict[str, dict[str, Any]]:
    proc = subprocess.run(
        [str(helm), "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--include-crds"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d and d["kind"] == "CustomResourceDefinition"]
    return {d["spec"]["names"]["kind"]: d for d in docs}


def schema_of(crd: dict[str, Any]) -> dict[str, Any]:
    [version] = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def walkthrough_documents() -> list[dict[str, Any]]:
    return [d for f in sorted(WALKTHROUGH.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


def test_committed_crds_are_the_generated_ones():
    committed = {p.name: p.read_text() for p in (CHART / "crds").glob("*.yaml")}
    assert committed == crds(), "run: python -m controlplane.cli.crds helm/sesame/crds"


def test_chart_ships_a_valid_crd_per_kind(helm: Path):
    found = rendered_crds(helm)
    assert set(found) == set(KINDS)
    for crd in found.values():
        kubernetes_validate.validate(crd, K8S_VERSION, strict=True)
        assert crd["spec"]["group"] == "sesame.dev"
        assert [v["name"] for v in crd["spec"]["versions"]] == ["v1alpha1"]


def _structural_violations(node: dict[str, Any], path: str) -> list[str]:
    bad = []
    if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        bad.append(f"{path}: no type")
    if "properties" in node and "additionalProperties" in node:
        bad.append(f"{path}: properties with additionalProperties")
    for keyword in ("anyOf", "oneOf", "allOf", "not", "$ref", "const", "nullable", "default"):
        if keyword in node:
            bad.append(f"{path}: {keyword}")
    if isinstance(node.get("type"), list):
        bad.append(f"{path}: type list")
    for name, child in (node.get("properties") or {}).items():
        bad += _structural_violations(child, f"{path}.{name}")
    for keyword in ("items", "additionalProperties"):
        if isinstance(node.get(keyword), dict):
            bad += _structural_violations(node[keyword], f"{path}[{keyword}]")
    return bad


def test_schemas_are_structural():
    for name, text in crds().items():
        schema = schema_of(yaml.safe_load(text))
        assert _structural_violations(schema, name) == []
        assert schema["properties"]["metadata"] == {"type": "object"}  # a CRD may not say more


def test_walkthrough_documents_validate_against_the_crds():
    schemas = {
        yaml.safe_load(t)["spec"]["names"]["kind"]: schema_of(yaml.safe_load(t)) for t in crds().values()
    }
    docs = walkthrough_documents()
    assert {d["kind"] for d in docs} == set(KINDS)
    for doc in docs:
        jsonschema.validate(doc, schemas[doc["kind"]])


def _bad(docs: list[dict[str, Any]], kind: str, edit) -> dict[str, Any]:
    doc = copy.deepcopy(next(d for d in docs if d["kind"] == kind))
    edit(doc["spec"])
    return doc


@pytest.mark.parametrize(
    ("kind", "edit"),
    [
        ("CredentialProvider", lambda s: s["secrets"].update(value="sk-inline")),
        ("CredentialProvider", lambda s: s["secrets"].update(value={"fromEnv": "A", "fromFile": "b"})),
        ("CredentialProvider", lambda s: s.update(type="magic")),
        ("Policy", lambda s: s.pop("provider")),
        ("Policy", lambda s: s.update(effect="maybe")),
        ("Target", lambda s: s.update(port=70000)),
        ("Target", lambda s: s.update(host="not a host")),
        ("Workload", lambda s: s.update(namespace="Not_A_Label")),
        ("Cluster", lambda s: s.update(verification="trust-me")),
    ],
)
def test_crds_refuse_bad_documents(kind, edit):
    schemas = {
        yaml.safe_load(t)["spec"]["names"]["kind"]: schema_of(yaml.safe_load(t)) for t in crds().values()
    }
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(_bad(walkthrough_documents(), kind, edit), schemas[kind])
