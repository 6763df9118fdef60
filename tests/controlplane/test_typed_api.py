"""The OpenAPI document is a typed contract: hand-chosen stable operationIds, a schema for every
success response (component schemas for resources and list responses), one field convention."""

from __future__ import annotations

import re

from openapi_spec_validator import validate

from controlplane.api import MODULES
from controlplane.openapi import build_openapi

ROUTES = [route for module in MODULES for route in module.ROUTES]
# Kubernetes' own field names inside an AdmissionReview are camelCase by its convention.
KUBERNETES_FIELDS = {"apiVersion", "patchType"}


def test_every_route_has_a_hand_chosen_camel_case_operation_id():
    ids = [route.operation for route in ROUTES]
    assert all(re.fullmatch(r"[a-z]+(?:[A-Z][a-z0-9]*)*", i) for i in ids), ids
    assert len(ids) == len(set(ids))
    doc = build_openapi(ROUTES)
    assert sorted(op["operationId"] for ops in doc["paths"].values() for op in ops.values()) == sorted(ids)
    assert {
        "listWorkloads",
        "createPolicy",
        "getCluster",
        "updateTarget",
        "deleteCredentialProvider",
        "rotateCredentialProvider",
        "exchangeToken",
        "listAuditEvents",
        "verifyAuditChain",
    } <= set(ids)


def test_every_success_response_has_a_schema_and_resources_are_components():
    doc = build_openapi(ROUTES)
    validate(doc)
    components = doc["components"]["schemas"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            [(status, success)] = [(s, r) for s, r in op["responses"].items() if s.startswith("2")][:1]
            assert success["description"], (method, path)
            if status == "204":
                assert "content" not in success
                continue
            for content in success["content"].values():
                assert content["schema"], (method, path)
    for resource in ("Workload", "Cluster", "Target", "CredentialProvider", "Policy", "ApiKey", "Approval"):
        assert resource in components and f"{resource}List" in components
        listing = components[f"{resource}List"]
        assert listing["properties"]["data"]["items"] == {"$ref": f"#/components/schemas/{resource}"}
    assert doc["paths"]["/v1/workloads"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"
    ] == {"$ref": "#/components/schemas/WorkloadList"}
    text = str(doc)
    for ref in set(re.findall(r"#/components/schemas/(\w+)", text)):
        assert ref in components, ref


def _field_names(schema, out: set[str]) -> set[str]:
    if isinstance(schema, dict):
        out |= set(schema.get("properties") or {})
        for value in schema.values():
            _field_names(value, out)
    elif isinstance(schema, list):
        for value in schema:
            _field_names(value, out)
    return out


def test_one_field_naming_convention():
    doc = build_openapi(ROUTES)
    names = _field_names(doc["components"]["schemas"], set()) | _field_names(doc["paths"], set())
    camel = {n for n in names if re.search(r"[a-z][A-Z]", n)} - KUBERNETES_FIELDS
    assert camel == set()
    api_key = doc["components"]["schemas"]["ApiKey"]["properties"]
    assert {"created_at", "last_used_at"} <= set(api_key) and "createdAt" not in api_key
